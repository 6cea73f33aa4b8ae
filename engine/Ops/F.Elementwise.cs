using Frugal.Backends;

namespace Frugal;

/// <summary>The op surface (PyTorch's torch.nn.functional and tensor ops): validates inputs, allocates results
/// through the device allocator, calls the device's kernel table and records autograd.</summary>
public static partial class F
{
    private static Tensor NewLike(Shape shape, Tensor like, DType? dtype = null) => Tensor.Empty(shape, dtype ?? like.DType, like.Device);

    /// <summary>The view of <paramref name="t"/> expanded (stride 0) to <paramref name="shape"/>, which must be its broadcast.</summary>
    internal static StridedView ExpandedView(Tensor t, Shape shape)
    {
        var v = t.View;
        var rank = shape.Rank;
        var strides = new int[rank];
        var pad = rank - v.Rank;
        for (var i = 0; i < rank; i++)
            strides[i] = i < pad || v.Shape[i - pad] == 1 ? 0 : v.Strides[i - pad];
        return v with { Shape = shape.Dims, Strides = strides };
    }

    /// <summary>Sums a broadcast gradient back to <paramref name="shape"/> (an alias when no axis was broadcast).</summary>
    internal static Tensor SumTo(Tensor g, Shape shape)
    {
        if (g.Shape == shape)
            return g.Alias();
        var pad = g.Rank - shape.Rank;
        var axes = new List<int>();
        for (var i = 0; i < g.Rank; i++)
        {
            if (i < pad || (shape[i - pad] == 1 && g.Shape[i] != 1))
                axes.Add(i);
        }
        using var s = Reduce(ReduceOp.Sum, g, [.. axes], keepDim: true);
        return s.Reshape(shape.Dims);
    }

    private static Tensor BinaryOp(BinaryOp op, Tensor a, Tensor b, string name)
    {
        Check.Compatible(name, a, b);
        if (!op.IsComparison())
            Check.Float(name, a);
        var shape = Shape.Broadcast(a.Shape, b.Shape, name);
        var y = NewLike(shape, a, op.IsComparison() ? DType.U8 : null);
        a.Backend.Binary(op, ExpandedView(a, shape), ExpandedView(b, shape), y.View);
        if (op.IsComparison())
            return y;
        var node = Autograd.Record(y, name, a, b);
        if (node is null)
            return y;
        switch (op)
        {
            case Backends.BinaryOp.Add:
                node.Backward = g => [node.NeedsGrad(0) ? SumTo(g, a.Shape) : null, node.NeedsGrad(1) ? SumTo(g, b.Shape) : null];
                break;
            case Backends.BinaryOp.Sub:
                node.Backward = g => [node.NeedsGrad(0) ? SumTo(g, a.Shape) : null, node.NeedsGrad(1) ? NegSumTo(g, b.Shape) : null];
                break;
            case Backends.BinaryOp.Mul:
            {
                var sa = node.NeedsGrad(1) ? node.Save(a) : null;
                var sb = node.NeedsGrad(0) ? node.Save(b) : null;
                node.Backward = g => [sb is null ? null : ProductSumTo(g, sb, a.Shape), sa is null ? null : ProductSumTo(g, sa, b.Shape)];
                break;
            }
            case Backends.BinaryOp.Div:
            {
                var sa = node.NeedsGrad(1) ? node.Save(a) : null;
                var sb = node.Save(b);
                node.Backward = g =>
                {
                    Tensor? ga = null, gb = null;
                    if (node.NeedsGrad(0))
                    {
                        using var q = Div(g, sb);
                        ga = SumTo(q, a.Shape);
                    }
                    if (sa is not null)
                    {
                        // d(a/b)/db = -a/b²
                        using var b2 = Mul(sb, sb);
                        using var q = Div(sa, b2);
                        using var p = Mul(g, q);
                        using var n = p.Neg();
                        gb = SumTo(n, b.Shape);
                    }
                    return [ga, gb];
                };
                break;
            }
            case Backends.BinaryOp.Pow:
            {
                var sa = node.Save(a);
                var sb = node.Save(b);
                var sy = node.Save(y);
                node.Backward = g =>
                {
                    Tensor? ga = null, gb = null;
                    if (node.NeedsGrad(0))
                    {
                        // b·a^(b-1) = b·y/a
                        using var t1 = Mul(sb, sy);
                        using var t2 = Div(t1, sa);
                        ga = ProductSumTo(g, t2, a.Shape);
                    }
                    if (node.NeedsGrad(1))
                    {
                        using var la = sa.Log();
                        using var t1 = Mul(sy, la);
                        gb = ProductSumTo(g, t1, b.Shape);
                    }
                    return [ga, gb];
                };
                break;
            }
            case Backends.BinaryOp.Maximum:
            case Backends.BinaryOp.Minimum:
            {
                var sa = node.Save(a);
                var sb = node.Save(b);
                var pick = op == Backends.BinaryOp.Maximum ? Backends.BinaryOp.Ge : Backends.BinaryOp.Le;
                node.Backward = g =>
                {
                    // Ties send the gradient to a (as PyTorch's max splits it, any subgradient is valid).
                    using var takeA = BinaryOp(pick, sa, sb, "compare");
                    using var zero = Tensor.Zeros(new Shape(), g.DType, g.Device);
                    Tensor? ga = null, gb = null;
                    if (node.NeedsGrad(0))
                    {
                        using var w = Where(takeA, g, zero);
                        ga = SumTo(w, a.Shape);
                    }
                    if (node.NeedsGrad(1))
                    {
                        using var w = Where(takeA, zero, g);
                        gb = SumTo(w, b.Shape);
                    }
                    return [ga, gb];
                };
                break;
            }
            default:
                throw new NotSupportedException($"{name}: no gradient for {op}");
        }
        return y;
    }

    private static Tensor NegSumTo(Tensor g, Shape shape)
    {
        using var n = g.Neg();
        return SumTo(n, shape);
    }

    private static Tensor ProductSumTo(Tensor g, Tensor factor, Shape shape)
    {
        using var p = Mul(g, factor);
        return SumTo(p, shape);
    }

    /// <summary>a + b with broadcasting.</summary>
    public static Tensor Add(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Add, a, b, "Add");

    /// <summary>a - b with broadcasting.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Sub, a, b, "Sub");

    /// <summary>a · b elementwise with broadcasting.</summary>
    public static Tensor Mul(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Mul, a, b, "Mul");

    /// <summary>a / b elementwise with broadcasting.</summary>
    public static Tensor Div(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Div, a, b, "Div");

    /// <summary>a ^ b elementwise with broadcasting.</summary>
    public static Tensor Pow(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Pow, a, b, "Pow");

    /// <summary>Elementwise maximum.</summary>
    public static Tensor Maximum(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Maximum, a, b, "Maximum");

    /// <summary>Elementwise minimum.</summary>
    public static Tensor Minimum(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Minimum, a, b, "Minimum");

    /// <summary>a == b (U8).</summary>
    public static Tensor Eq(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Eq, a, b, "Eq");

    /// <summary>a != b (U8).</summary>
    public static Tensor Ne(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Ne, a, b, "Ne");

    /// <summary>a &lt; b (U8).</summary>
    public static Tensor Lt(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Lt, a, b, "Lt");

    /// <summary>a &lt;= b (U8).</summary>
    public static Tensor Le(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Le, a, b, "Le");

    /// <summary>a &gt; b (U8).</summary>
    public static Tensor Gt(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Gt, a, b, "Gt");

    /// <summary>a &gt;= b (U8).</summary>
    public static Tensor Ge(Tensor a, Tensor b) => BinaryOp(Backends.BinaryOp.Ge, a, b, "Ge");

    /// <summary>cond ? a : b with broadcasting; cond is U8.</summary>
    public static Tensor Where(Tensor cond, Tensor a, Tensor b)
    {
        Check.Compatible("Where", a, b);
        Check.SameDevice("Where", cond, a);
        if (cond.DType != DType.U8)
            throw new ArgumentException($"Where: condition must be u8, got {cond.Describe()}");
        var shape = Shape.Broadcast(Shape.Broadcast(cond.Shape, a.Shape, "Where"), b.Shape, "Where");
        var y = NewLike(shape, a);
        a.Backend.Where(ExpandedView(cond, shape), ExpandedView(a, shape), ExpandedView(b, shape), y.View);
        var node = Autograd.Record(y, "Where", a, b);
        if (node is not null)
        {
            var sc = node.Save(cond);
            node.Backward = g =>
            {
                using var zero = Tensor.Zeros(new Shape(), g.DType, g.Device);
                Tensor? ga = null, gb = null;
                if (node.NeedsGrad(0))
                {
                    using var w = Where(sc, g, zero);
                    ga = SumTo(w, a.Shape);
                }
                if (node.NeedsGrad(1))
                {
                    using var w = Where(sc, zero, g);
                    gb = SumTo(w, b.Shape);
                }
                return [ga, gb];
            };
        }
        return y;
    }

    /// <summary>Applies a unary kernel and records its derivative (from x, or from y where cheaper).</summary>
    internal static Tensor UnaryOp(UnaryOp op, Tensor x, double alpha = 0)
    {
        var name = op.ToString();
        Check.Float(name, x);
        var y = NewLike(x.Shape, x);
        x.Backend.Unary(op, x.View, y.View, alpha);
        var node = Autograd.Record(y, name, x);
        if (node is not null && op == Backends.UnaryOp.Relu && Autocast.Current is not null)
        {
            // Under mixed precision the next linear layer keeps only a 16-bit copy of this output, so keeping the
            // F32 output here would cost more than it saves: keep the 1-byte mask y > 0 instead.
            Tensor mask;
            using (var zero = Tensor.Zeros(new Shape(), x.DType, x.Device))
                mask = Gt(y, zero);
            var sm = node.Save(mask);
            mask.Dispose();
            node.Backward = g =>
            {
                using var zero = Tensor.Zeros(new Shape(), g.DType, g.Device);
                return [Where(sm, g, zero)];
            };
            return y;
        }
        if (node is not null)
        {
            // Keep only what the derivative reads: the output for exp, tanh, sigmoid, sqrt and relu (y > 0 exactly
            // where x > 0), else the input. An output is often also the next layer's saved input: one tensor, not two.
            var fromY = op is Backends.UnaryOp.Exp or Backends.UnaryOp.Tanh or Backends.UnaryOp.Sigmoid or Backends.UnaryOp.Sqrt or Backends.UnaryOp.Relu;
            var usesX = !fromY && op is not (Backends.UnaryOp.Neg or Backends.UnaryOp.AddScalar or Backends.UnaryOp.MulScalar);
            var sx = usesX ? node.Save(x.IsContiguous ? x : x.Contiguous()) : null;
            var sy = fromY ? node.Save(y) : null;
            node.Backward = g =>
            {
                using var gc = g.Contiguous();
                var dx = NewLike(x.Shape, x);
                x.Backend.UnaryBackward(op, sx?.View ?? default, sy?.View ?? default, gc.View, dx.View, alpha);
                return [dx];
            };
        }
        return y;
    }

    /// <summary>In place: a += b (no autograd; gradient accumulation and optimizers use it).</summary>
    public static void AddInPlace(Tensor a, Tensor b)
    {
        Check.Compatible("AddInPlace", a, b);
        if (!a.IsContiguous)
            throw new ArgumentException($"AddInPlace: destination {a.Describe()} must be contiguous");
        var shape = Shape.Broadcast(a.Shape, b.Shape, "AddInPlace");
        if (shape != a.Shape)
            throw new ShapeMismatchException($"AddInPlace: {b.Describe()} does not broadcast to destination {a.Describe()}");
        a.Backend.Binary(Backends.BinaryOp.Add, a.View, ExpandedView(b, shape), a.View);
    }

    /// <summary>Fills <paramref name="t"/> with a value in place (no autograd).</summary>
    public static void FillInPlace(Tensor t, double value)
    {
        Check.Live("Fill", t);
        t.Backend.Fill(t.View, value);
    }

    /// <summary>Copies <paramref name="src"/> into <paramref name="dst"/> in place (same shape and dtype; no autograd).</summary>
    public static void CopyInto(Tensor dst, Tensor src)
    {
        Check.Compatible("CopyInto", dst, src);
        Check.Shape("CopyInto", src, dst.Shape, "source");
        dst.Backend.Copy(src.View, dst.View);
    }
}
