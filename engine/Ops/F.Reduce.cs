using Frugal.Backends;

namespace Frugal;

public static partial class F
{
    /// <summary>Reduction over <paramref name="axes"/> (all axes when empty).</summary>
    internal static Tensor Reduce(ReduceOp op, Tensor x, int[] axes, bool keepDim)
    {
        var name = op.ToString();
        Check.Float(name, x);
        var norm = axes.Length == 0 ? Enumerable.Range(0, x.Rank).ToArray() : axes.Select(x.Shape.Normalize).Distinct().Order().ToArray();
        var keptDims = x.Shape.ToArray();
        foreach (var a in norm)
            keptDims[a] = 1;
        var kept = Shape.Wrap(keptDims);
        if (op is ReduceOp.Max or ReduceOp.Min && norm.Any(a => x.Shape[a] == 0))
            throw new ShapeMismatchException($"{name}: cannot reduce an empty dimension of {x.Describe()}");
        var yk = NewLike(kept, x);
        x.Backend.Reduce(op, x.View, norm, yk.View);
        var node = Autograd.Record(yk, name, x);
        if (node is not null)
        {
            var count = norm.Aggregate(1L, (acc, a) => acc * x.Shape[a]);
            var sx = op is ReduceOp.Max or ReduceOp.Min ? node.Save(x) : null;
            var sy = sx is null ? null : node.Save(yk);
            node.Backward = g =>
            {
                using var ge = Expand(g, x.Shape.Dims);
                if (op == ReduceOp.Sum)
                    return [Contiguous(ge)];
                if (op == ReduceOp.Mean)
                    return [ge.Mul(1.0 / count)];
                // max/min: the gradient is shared equally among the tied extremes (PyTorch's amax rule).
                using var hit = Eq(sx!, sy!);
                using var hitF = Cast(hit, x.DType);
                using var ties = Reduce(ReduceOp.Sum, hitF, norm, keepDim: true);
                using var share = Div(g, ties);
                return [Mul(hitF, share)];
            };
        }
        if (keepDim)
            return yk;
        var dims = x.Shape.ToArray().Where((_, i) => !norm.Contains(i)).ToArray();
        using (yk)
            return yk.Reshape(dims);
    }

    /// <summary>Sum of all elements (a 0-d tensor).</summary>
    public static Tensor Sum(Tensor x) => Reduce(ReduceOp.Sum, x, [], keepDim: false);

    /// <summary>Sum over <paramref name="dims"/>.</summary>
    public static Tensor Sum(Tensor x, int[] dims, bool keepDim = false) => Reduce(ReduceOp.Sum, x, dims, keepDim);

    /// <summary>Mean of all elements (a 0-d tensor).</summary>
    public static Tensor Mean(Tensor x) => Reduce(ReduceOp.Mean, x, [], keepDim: false);

    /// <summary>Mean over <paramref name="dims"/>.</summary>
    public static Tensor Mean(Tensor x, int[] dims, bool keepDim = false) => Reduce(ReduceOp.Mean, x, dims, keepDim);

    /// <summary>Maximum over <paramref name="dims"/> (all when empty).</summary>
    public static Tensor Max(Tensor x, int[] dims, bool keepDim = false) => Reduce(ReduceOp.Max, x, dims, keepDim);

    /// <summary>Minimum over <paramref name="dims"/> (all when empty).</summary>
    public static Tensor Min(Tensor x, int[] dims, bool keepDim = false) => Reduce(ReduceOp.Min, x, dims, keepDim);

    /// <summary>I32 index of the (first) maximum along <paramref name="dim"/>.</summary>
    public static Tensor ArgMax(Tensor x, int dim, bool keepDim = false)
    {
        Check.Float("ArgMax", x);
        var d = x.Shape.Normalize(dim);
        if (x.Shape[d] == 0)
            throw new ShapeMismatchException($"ArgMax: dimension {d} of {x.Describe()} is empty");
        var dims = x.Shape.ToArray();
        dims[d] = 1;
        var y = NewLike(Shape.Wrap(dims), x, DType.I32);
        x.Backend.ArgMax(x.View, d, y.View);
        if (keepDim)
            return y;
        using (y)
            return Squeeze(y, d);
    }
}
