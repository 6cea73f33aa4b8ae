using Frugal.Memory;
using Frugal.Backends;

namespace Frugal;

public static partial class F
{
    /// <summary>How a GEMM reads one operand without copying: base address, leading dimension, whether the
    /// stored matrix is the transpose of the logical one, and the stride between batch matrices.</summary>
    private readonly record struct MatrixOperand(Tensor Source, int Ld, bool Transposed, long BatchStride);

    /// <summary>Reads the last two dims of <paramref name="t"/> as a row- or column-major matrix and its leading
    /// dims as one uniform batch stride; makes a contiguous copy when the layout does not allow that.</summary>
    private static MatrixOperand Operand(Tensor t, int batch)
    {
        var r = t.Rank;
        int rows = t.Shape[r - 2], cols = t.Shape[r - 1];
        var s = t.RawStrides;
        int sr = s[r - 2], sc = s[r - 1];
        long batchStride = 0;
        var uniform = true;
        if (r > 2)
        {
            // Collapse batch dims into one stride: the innermost non-unit batch dim defines it.
            long expect = -1;
            for (var i = r - 3; i >= 0; i--)
            {
                if (t.Shape[i] == 1)
                    continue;
                if (expect < 0)
                {
                    batchStride = s[i];
                    expect = (long)s[i] * t.Shape[i];
                }
                else if (s[i] != expect)
                {
                    uniform = false;
                }
                else
                {
                    expect *= t.Shape[i];
                }
            }
        }
        var rowMajor = (sc == 1 || cols == 1) && sr >= Math.Max(cols, 1);
        var colMajor = (sr == 1 || rows == 1) && sc >= Math.Max(rows, 1);
        if (uniform && rowMajor)
            return new MatrixOperand(t.Alias(), Math.Max(sr, 1), false, batch == 1 ? 0 : batchStride);
        if (uniform && colMajor)
            return new MatrixOperand(t.Alias(), Math.Max(sc, 1), true, batch == 1 ? 0 : batchStride);
        var c = Contiguous(t);
        return new MatrixOperand(c, Math.Max(cols, 1), false, batch == 1 ? 0 : (long)rows * cols);
    }

    /// <summary>Matrix product op(a)·op(b) over the last two dims, batch dims broadcast (PyTorch's matmul with
    /// optional transposes). Transposed views are read in place, never copied.</summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false)
    {
        Check.Compatible("MatMul", a, b);
        Check.Float("MatMul", a);
        if (a.Rank < 2 || b.Rank < 2)
            throw new ShapeMismatchException($"MatMul: operands need rank >= 2, got {a.Describe()} and {b.Describe()}");
        int m = transA ? a.Shape[-1] : a.Shape[-2];
        int ka = transA ? a.Shape[-2] : a.Shape[-1];
        int kb = transB ? b.Shape[-1] : b.Shape[-2];
        int n = transB ? b.Shape[-2] : b.Shape[-1];
        if (ka != kb)
            throw new ShapeMismatchException($"MatMul: inner dimensions differ: {a.Describe()}{(transA ? "ᵀ" : "")} · {b.Describe()}{(transB ? "ᵀ" : "")} ({ka} vs {kb})");

        // A stack of row-major matrices times one matrix: fold the stack into the rows (one big GEMM).
        if (b.Rank == 2 && a.Rank > 2 && !transA)
        {
            using var a2 = a.Reshape(-1, a.Shape[-1]);
            using var y2 = MatMul(a2, b, false, transB);
            var dims = a.Shape.ToArray();
            dims[^1] = n;
            return y2.Reshape(dims);
        }

        var batchA = Shape.Wrap(a.Shape.Dims[..^2]);
        var batchB = Shape.Wrap(b.Shape.Dims[..^2]);
        var batchShape = Shape.Broadcast(batchA, batchB, "MatMul");
        var batch = (int)batchShape.Numel;
        var y = NewLike(Shape.Wrap([.. batchShape.Dims, m, n]), a);
        MatrixOperand oa, ob;
        using (Autograd.NoGrad())
        {
            // Operands are read through views or copies that need no history: the MatMul node differentiates a and b.
            using var ea = Expand(a, [.. batchShape.Dims, a.Shape[-2], a.Shape[-1]]);
            using var eb = Expand(b, [.. batchShape.Dims, b.Shape[-2], b.Shape[-1]]);
            oa = Operand(batchA.Numel == 1 ? a : ea, batchA.Numel == 1 ? 1 : batch);
            ob = Operand(batchB.Numel == 1 ? b : eb, batchB.Numel == 1 ? 1 : batch);
        }
        using (oa.Source)
        using (ob.Source)
        {
            var args = new GemmArgs(transA ^ oa.Transposed, transB ^ ob.Transposed, batch, m, n, ka,
                1.0, oa.Ld, oa.BatchStride, ob.Ld, ob.BatchStride, 0.0, Math.Max(n, 1), (long)m * n);
            a.Backend.Gemm(args, a.DType, oa.Source.View.Data, ob.Source.View.Data, y.View.Data);
        }
        var node = Autograd.Record(y, "MatMul", a, b);
        if (node is not null)
        {
            var sa = node.NeedsGrad(1) ? node.Save(a) : null;
            var sb = node.NeedsGrad(0) ? node.Save(b) : null;
            node.Backward = g =>
            {
                Tensor? ga = null, gb = null;
                if (sb is not null)
                {
                    using var full = transA ? MatMul(sb, g, transB, true) : MatMul(g, sb, false, !transB);
                    ga = SumTo(full, a.Shape);
                }
                if (sa is not null)
                {
                    using var full = transB ? MatMul(g, sa, true, transA) : MatMul(sa, g, !transA, false);
                    gb = SumTo(full, b.Shape);
                }
                return [ga, gb];
            };
        }
        return y;
    }

    /// <summary>y = x·Wᵀ + b (PyTorch's linear): x [.., in], weight [out, in] in any format, bias [out] or null.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        Check.Compatible("Linear", x, weight);
        if (weight.Rank != 2 || x.Rank < 1 || x.Shape[-1] != weight.Shape[1])
            throw new ShapeMismatchException($"Linear: input {x.Describe()} does not fit weight {weight.Describe()} (expects [.., {(weight.Rank == 2 ? weight.Shape[1] : -1)}])");
        if (bias is not null)
        {
            Check.Compatible("Linear", x, bias);
            Check.Shape("Linear", bias, new Shape(weight.Shape[0]), "bias");
        }
        if (x.Rank == 1)
        {
            using var x2 = x.Reshape(1, x.Shape[0]);
            using var y2 = Linear(x2, weight, bias);
            return y2.Reshape(weight.Shape[0]);
        }
        var y = Autocast.Current is { } low && x.DType == DType.F32 && weight.DType == DType.F32
            ? LowPrecisionLinear(x, weight, low)
            : MatMul(x, weight, transB: true);
        if (bias is null)
            return y;
        using (y)
            return Add(y, bias);
    }

    /// <summary>x·Wᵀ with x and W rounded to <paramref name="low"/> (BF16/F16) and F32 accumulation. Backward keeps
    /// only the 16-bit copy of x (Activation; the weight is referenced, not copied, and rounded again) and computes
    /// both gradients in F32. The F32 copies of the rounded values are Workspace, freed at once.</summary>
    private static Tensor LowPrecisionLinear(Tensor x, Tensor weight, DType low)
    {
        Tensor x16, y;
        using (Autograd.NoGrad())
        {
            x16 = Cast(x, low);
            using var xr = Workspace(() => Cast(x16, DType.F32));
            using var wr = Workspace(() => Rounded(weight, low));
            y = MatMul(xr, wr, transB: true);
        }
        var node = Autograd.Record(y, "LinearLowPrecision", x, weight);
        if (node is not null)
        {
            var sx = weight.RequiresGrad ? node.Save(x16) : null;
            var sw = x.RequiresGrad ? node.Save(weight) : null;
            node.Backward = g =>
            {
                Tensor? dx = null, dw = null;
                if (sw is not null)
                {
                    using var wr = Workspace(() => Rounded(sw, low));
                    dx = MatMul(g, wr);                        // [.., out]·[out, in]
                }
                if (sx is not null)
                {
                    using var xr = Cast(sx, DType.F32);
                    using var g2 = g.Reshape(-1, g.Shape[^1]);
                    using var x2 = xr.Reshape(-1, xr.Shape[^1]);
                    dw = MatMul(g2, x2, transA: true);         // [out, N]·[N, in]
                }
                return [dx, dw];
            };
        }
        x16.Dispose();
        return y;
    }

    /// <summary>An F32 tensor holding <paramref name="t"/>'s values rounded to <paramref name="low"/>.</summary>
    private static Tensor Rounded(Tensor t, DType low)
    {
        using var t16 = Cast(t, low);
        return Cast(t16, DType.F32);
    }
}
