using System.Numerics;
using System.Numerics.Tensors;

namespace Frugal.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Unary(UnaryOp op, StridedView x, StridedView y, double alpha)
    {
        RequireFloat("Unary", x);
        if (!x.IsContiguous)
        {
            // Gather into y, then apply in place: the vector primitives want dense spans.
            Copy(x, y);
            x = y;
        }
        Dispatch("Unary", x.DType, () => UnaryT<float>(op, x, y, alpha), () => UnaryT<double>(op, x, y, alpha));
    }

    private static void UnaryT<T>(UnaryOp op, StridedView xv, StridedView yv, double alpha) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var a = T.CreateTruncating(alpha);
        T* xp = P<T>(xv), yp = P<T>(yv);
        StridedLoop.ForRows(xv.Numel, 1, (i0, i1) =>
        {
            var n = (int)(i1 - i0);
            var x = new ReadOnlySpan<T>(xp + i0, n);
            var y = new Span<T>(yp + i0, n);
            switch (op)
            {
                case UnaryOp.Neg: TensorPrimitives.Negate(x, y); break;
                case UnaryOp.Exp: TensorPrimitives.Exp(x, y); break;
                case UnaryOp.Log: TensorPrimitives.Log(x, y); break;
                case UnaryOp.Tanh: TensorPrimitives.Tanh(x, y); break;
                case UnaryOp.Sigmoid: TensorPrimitives.Sigmoid(x, y); break;
                case UnaryOp.Relu: TensorPrimitives.Max(x, T.Zero, y); break;
                case UnaryOp.Sqrt: TensorPrimitives.Sqrt(x, y); break;
                case UnaryOp.Abs: TensorPrimitives.Abs(x, y); break;
                case UnaryOp.AddScalar: TensorPrimitives.Add(x, a, y); break;
                case UnaryOp.MulScalar: TensorPrimitives.Multiply(x, a, y); break;
                case UnaryOp.PowScalar: TensorPrimitives.Pow(x, a, y); break;
                case UnaryOp.Gelu: Gelu(x, default, y); break;
                default: throw new NotSupportedException($"cpu Unary: {op}");
            }
        });
    }

    /// <summary>Elements per vector pass of <see cref="Gelu{T}"/>: a few stack buffers that stay in L1.</summary>
    private const int GeluChunk = 256;

    /// <summary>The tanh GELU ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³), written as x·σ(2u), into
    /// <paramref name="y"/>; with a non-empty <paramref name="dy"/>, its gradient dy·(s + 2x·s(1 − s)·du/dx) with
    /// s = σ(2u) instead (<paramref name="y"/> may be <paramref name="x"/> or <paramref name="dy"/>). Whole spans at a time through the vector primitives, one stack chunk at a time.</summary>
    private static void Gelu<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var c = T.CreateTruncating(0.7978845608028654);
        var cube = T.CreateTruncating(0.044715);
        var two = T.CreateTruncating(2);
        Span<T> s = stackalloc T[GeluChunk], t = stackalloc T[GeluChunk], r = stackalloc T[GeluChunk];
        for (var i0 = 0; i0 < x.Length; i0 += GeluChunk)
        {
            var n = Math.Min(GeluChunk, x.Length - i0);
            ReadOnlySpan<T> xs = x.Slice(i0, n);
            Span<T> ss = s[..n], ts = t[..n], rs = r[..n], ys = y.Slice(i0, n);
            TensorPrimitives.Multiply(xs, xs, ts);                                  // x²
            TensorPrimitives.Multiply(ts, two * c * cube, ss);
            TensorPrimitives.Add(ss, two * c, ss);                                  // 2u / x
            TensorPrimitives.Multiply(ss, xs, ss);                                  // 2u
            TensorPrimitives.Sigmoid(ss, ss);                                       // s
            if (dy.IsEmpty)
            {
                TensorPrimitives.Multiply(xs, ss, ys);
                continue;
            }
            TensorPrimitives.Multiply(ts, two * c * T.CreateTruncating(3) * cube, ts);
            TensorPrimitives.Add(ts, two * c, ts);                                  // 2·du/dx
            TensorPrimitives.Multiply(ts, xs, ts);
            TensorPrimitives.Multiply(ts, ss, ts);
            TensorPrimitives.Subtract(T.One, ss, rs);                               // 1 − s
            TensorPrimitives.MultiplyAdd(ts, rs, ss, ts);                           // s + 2x·s(1 − s)·du/dx
            TensorPrimitives.Multiply(ts, dy.Slice(i0, n), ys);
        }
    }

    /// <inheritdoc/>
    public void UnaryBackward(UnaryOp op, StridedView x, StridedView y, StridedView dy, StridedView dx, double alpha)
        => Dispatch("UnaryBackward", dy.DType, () => UnaryBackwardT<float>(op, x, y, dy, dx, alpha), () => UnaryBackwardT<double>(op, x, y, dy, dx, alpha));

    private static void UnaryBackwardT<T>(UnaryOp op, StridedView xv, StridedView yv, StridedView dyv, StridedView dxv, double alpha)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* x = P<T>(xv), y = P<T>(yv), dy = P<T>(dyv), dx = P<T>(dxv);
        var a = T.CreateTruncating(alpha);
        var half = T.CreateTruncating(0.5);
        StridedLoop.ForRows(dyv.Numel, 1, (i0, i1) =>
        {
            var n = (int)(i1 - i0);
            var g = new ReadOnlySpan<T>(dy + i0, n);
            var d = new Span<T>(dx + i0, n);
            switch (op)
            {
                case UnaryOp.Neg: TensorPrimitives.Negate(g, d); break;
                case UnaryOp.AddScalar: g.CopyTo(d); break;
                case UnaryOp.MulScalar: TensorPrimitives.Multiply(g, a, d); break;
                case UnaryOp.Exp: TensorPrimitives.Multiply(g, new ReadOnlySpan<T>(y + i0, n), d); break;
                case UnaryOp.Log: TensorPrimitives.Divide(g, new ReadOnlySpan<T>(x + i0, n), d); break;
                case UnaryOp.Relu:
                {
                    // From the output: y > 0 exactly where x > 0.
                    var xs = new ReadOnlySpan<T>(y + i0, n);
                    var j = 0;
                    for (; j <= n - Vector<T>.Count; j += Vector<T>.Count)
                    {
                        var keep = Vector.GreaterThan(new Vector<T>(xs[j..]), Vector<T>.Zero);
                        Vector.ConditionalSelect(keep, new Vector<T>(g[j..]), Vector<T>.Zero).CopyTo(d[j..]);
                    }
                    for (; j < n; j++)
                        d[j] = xs[j] > T.Zero ? g[j] : T.Zero;
                    break;
                }
                case UnaryOp.Tanh:
                    for (var j = 0; j < n; j++)
                        d[j] = g[j] * (T.One - y[i0 + j] * y[i0 + j]);
                    break;
                case UnaryOp.Sigmoid:
                    for (var j = 0; j < n; j++)
                        d[j] = g[j] * y[i0 + j] * (T.One - y[i0 + j]);
                    break;
                case UnaryOp.Gelu: Gelu(new ReadOnlySpan<T>(x + i0, n), g, d); break;
                case UnaryOp.Sqrt:
                    for (var j = 0; j < n; j++)
                        d[j] = g[j] * half / y[i0 + j];
                    break;
                case UnaryOp.Abs:
                    for (var j = 0; j < n; j++)
                        d[j] = x[i0 + j] > T.Zero ? g[j] : x[i0 + j] < T.Zero ? -g[j] : T.Zero;
                    break;
                case UnaryOp.PowScalar:
                    for (var j = 0; j < n; j++)
                        d[j] = g[j] * a * T.Pow(x[i0 + j], a - T.One);
                    break;
                default:
                    throw new NotSupportedException($"cpu UnaryBackward: {op}");
            }
        });
    }

    /// <inheritdoc/>
    public void Binary(BinaryOp op, StridedView a, StridedView b, StridedView y)
    {
        if (op.IsComparison())
            Dispatch("Binary", a.DType, () => CompareT<float>(op, a, b, y), () => CompareT<double>(op, a, b, y));
        else
            Dispatch("Binary", a.DType, () => BinaryT<float>(op, a, b, y), () => BinaryT<double>(op, a, b, y));
    }

    private static T Apply<T>(BinaryOp op, T a, T b) where T : IFloatingPointIeee754<T> => op switch
    {
        BinaryOp.Add => a + b,
        BinaryOp.Sub => a - b,
        BinaryOp.Mul => a * b,
        BinaryOp.Div => a / b,
        BinaryOp.Pow => T.Pow(a, b),
        BinaryOp.Maximum => T.IsNaN(a) || a >= b ? a : b,
        BinaryOp.Minimum => T.IsNaN(a) || a <= b ? a : b,
        _ => throw new NotSupportedException($"cpu Binary: {op}"),
    };

    private static void BinaryT<T>(BinaryOp op, StridedView av, StridedView bv, StridedView yv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var plan = StridedLoop.Coalesce(yv.Shape, av.Strides, bv.Strides, yv.Strides);
        var len = plan.RowLength;
        int sa = plan.Strides[0][^1], sb = plan.Strides[1][^1];
        T* a0 = P<T>(av), b0 = P<T>(bv), y0 = P<T>(yv);
        StridedLoop.ForRows(plan.Rows, len, (r0, r1) =>
        {
            var at = plan.Start(r0);
            for (var r = r0; r < r1; r++, at.Next())
            {
                T* pa = a0 + at[0], pb = b0 + at[1], py = y0 + at[2];
                var y = new Span<T>(py, len);
                if (sa == 1 && sb == 1)
                {
                    ReadOnlySpan<T> x = new(pa, len), z = new(pb, len);
                    switch (op)
                    {
                        case BinaryOp.Add: TensorPrimitives.Add(x, z, y); continue;
                        case BinaryOp.Sub: TensorPrimitives.Subtract(x, z, y); continue;
                        case BinaryOp.Mul: TensorPrimitives.Multiply(x, z, y); continue;
                        case BinaryOp.Div: TensorPrimitives.Divide(x, z, y); continue;
                    }
                }
                else if (sa == 1 && sb == 0)
                {
                    ReadOnlySpan<T> x = new(pa, len);
                    switch (op)
                    {
                        case BinaryOp.Add: TensorPrimitives.Add(x, *pb, y); continue;
                        case BinaryOp.Sub: TensorPrimitives.Subtract(x, *pb, y); continue;
                        case BinaryOp.Mul: TensorPrimitives.Multiply(x, *pb, y); continue;
                        case BinaryOp.Div: TensorPrimitives.Divide(x, *pb, y); continue;
                    }
                }
                else if (sa == 0 && sb == 1)
                {
                    ReadOnlySpan<T> z = new(pb, len);
                    switch (op)
                    {
                        case BinaryOp.Add: TensorPrimitives.Add(z, *pa, y); continue;
                        case BinaryOp.Mul: TensorPrimitives.Multiply(z, *pa, y); continue;
                        case BinaryOp.Sub: TensorPrimitives.Subtract(*pa, z, y); continue;
                        case BinaryOp.Div: TensorPrimitives.Divide(*pa, z, y); continue;
                    }
                }
                for (var i = 0; i < len; i++)
                    py[i] = Apply(op, pa[(long)i * sa], pb[(long)i * sb]);
            }
        });
    }

    private static void CompareT<T>(BinaryOp op, StridedView av, StridedView bv, StridedView yv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var plan = StridedLoop.Coalesce(yv.Shape, av.Strides, bv.Strides, yv.Strides);
        var len = plan.RowLength;
        int sa = plan.Strides[0][^1], sb = plan.Strides[1][^1];
        T* a0 = P<T>(av), b0 = P<T>(bv);
        var y0 = (byte*)yv.Data;
        StridedLoop.ForRows(plan.Rows, len, (r0, r1) =>
        {
            var at = plan.Start(r0);
            for (var r = r0; r < r1; r++, at.Next())
            {
                T* pa = a0 + at[0], pb = b0 + at[1];
                var py = y0 + at[2];
                for (var i = 0; i < len; i++)
                {
                    T x = pa[(long)i * sa], z = pb[(long)i * sb];
                    var hit = op switch
                    {
                        BinaryOp.Eq => x == z,
                        BinaryOp.Ne => x != z,
                        BinaryOp.Lt => x < z,
                        BinaryOp.Le => x <= z,
                        BinaryOp.Gt => x > z,
                        _ => x >= z,
                    };
                    py[i] = hit ? (byte)1 : (byte)0;
                }
            }
        });
    }

    /// <inheritdoc/>
    public void Where(StridedView cond, StridedView a, StridedView b, StridedView y)
        => Dispatch("Where", a.DType, () => WhereT<float>(cond, a, b, y), () => WhereT<double>(cond, a, b, y));

    private static void WhereT<T>(StridedView cv, StridedView av, StridedView bv, StridedView yv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var plan = StridedLoop.Coalesce(yv.Shape, cv.Strides, av.Strides, bv.Strides, yv.Strides);
        var len = plan.RowLength;
        int sc = plan.Strides[0][^1], sa = plan.Strides[1][^1], sb = plan.Strides[2][^1];
        var c0 = (byte*)cv.Data;
        T* a0 = P<T>(av), b0 = P<T>(bv), y0 = P<T>(yv);
        StridedLoop.ForRows(plan.Rows, len, (r0, r1) =>
        {
            var at = plan.Start(r0);
            for (var r = r0; r < r1; r++, at.Next())
            {
                var pc = c0 + at[0];
                T* pa = a0 + at[1], pb = b0 + at[2], py = y0 + at[3];
                for (var i = 0; i < len; i++)
                    py[i] = pc[(long)i * sc] != 0 ? pa[(long)i * sa] : pb[(long)i * sb];
            }
        });
    }

    /// <inheritdoc/>
    public void Custom(CustomKernel kernel, in LaunchConfig launch, IReadOnlyList<StridedView> inputs, IReadOnlyList<StridedView> outputs, IReadOnlyList<CustomScalar> scalars)
    {
        foreach (var operand in inputs.Concat(outputs))
        {
            if (operand.Numel > int.MaxValue)
                throw new NotSupportedException($"cpu Custom: the CPU function of '{kernel.Name}' takes at most 2^31 - 1 elements per operand, got [{string.Join(", ", operand.Shape)}]");
        }
        kernel.Cpu(new CustomKernelArgs(kernel.Name, inputs, outputs, scalars));
    }
}
