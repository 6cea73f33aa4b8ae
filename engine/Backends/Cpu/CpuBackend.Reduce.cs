using System.Numerics;
using System.Numerics.Tensors;

namespace Frugal.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Reduce(ReduceOp op, StridedView x, int[] axes, StridedView y)
        => Dispatch("Reduce", x.DType, () => ReduceT<float>(op, x, axes, y), () => ReduceT<double>(op, x, axes, y));

    private static void ReduceT<T>(ReduceOp op, StridedView xv, int[] axes, StridedView yv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        // Order x's dims as kept (outer) then reduced (inner); each output element reduces one inner block.
        var rank = xv.Rank;
        var kept = Enumerable.Range(0, rank).Where(d => !axes.Contains(d)).ToArray();
        var order = kept.Concat(axes).ToArray();
        var shape = order.Select(d => xv.Shape[d]).ToArray();
        var xStrides = order.Select(d => xv.Strides[d]).ToArray();
        long outer = 1, inner = 1;
        foreach (var d in kept) outer *= xv.Shape[d];
        foreach (var d in axes) inner *= xv.Shape[d];
        var innerPlan = StridedLoop.Coalesce(shape[kept.Length..], xStrides[kept.Length..]);
        var outerPlan = StridedLoop.Coalesce(shape[..kept.Length], xStrides[..kept.Length]);
        T* x = P<T>(xv), y = P<T>(yv);
        var count = T.CreateTruncating(inner);
        var rowLen = innerPlan.RowLength;
        var rowStride = innerPlan.Strides[0][^1];

        // Reducing leading axes of a contiguous tensor (bias gradients): accumulate whole rows, vectorised.
        if (xv.IsContiguous && kept.Length > 0 && axes.Length > 0 && axes.SequenceEqual(Enumerable.Range(0, axes.Length)))
        {
            var cols = (int)outer;
            var ys = new Span<T>(y, cols);
            new ReadOnlySpan<T>(x, cols).CopyTo(ys);
            for (long r = 1; r < inner; r++)
            {
                var row = new ReadOnlySpan<T>(x + r * cols, cols);
                switch (op)
                {
                    case ReduceOp.Max: TensorPrimitives.Max(ys, row, ys); break;
                    case ReduceOp.Min: TensorPrimitives.Min(ys, row, ys); break;
                    default: TensorPrimitives.Add(ys, row, ys); break;
                }
            }
            if (op == ReduceOp.Mean)
                TensorPrimitives.Divide(ys, count, ys);
            return;
        }

        StridedLoop.ForRows(outer, inner, (o0, o1) =>
        {
            for (var o = o0; o < o1; o++)
            {
                var baseOff = OuterOffset(outerPlan, o);
                var acc = op switch { ReduceOp.Max => T.NegativeInfinity, ReduceOp.Min => T.PositiveInfinity, _ => T.Zero };
                var at = innerPlan.Start(0);
                for (long r = 0; r < innerPlan.Rows; r++, at.Next())
                {
                    var p = x + baseOff + at[0];
                    if (rowStride == 1)
                    {
                        var s = new ReadOnlySpan<T>(p, rowLen);
                        acc = op switch
                        {
                            ReduceOp.Max => T.Max(acc, TensorPrimitives.Max(s)),
                            ReduceOp.Min => T.Min(acc, TensorPrimitives.Min(s)),
                            _ => acc + TensorPrimitives.Sum(s),
                        };
                        continue;
                    }
                    for (var i = 0; i < rowLen; i++)
                    {
                        var v = p[(long)i * rowStride];
                        acc = op switch { ReduceOp.Max => T.Max(acc, v), ReduceOp.Min => T.Min(acc, v), _ => acc + v };
                    }
                }
                y[o] = op == ReduceOp.Mean ? acc / count : acc;
            }
        });
    }

    /// <summary>Offset of element <paramref name="o"/> (row-major over all of the plan's dims).</summary>
    private static long OuterOffset(StridedLoop.Plan plan, long o)
    {
        long off = 0;
        var s = plan.Strides[0];
        for (var d = plan.Rank - 1; d >= 0 && o > 0; d--)
        {
            var idx = o % plan.Shape[d];
            o /= plan.Shape[d];
            off += idx * s[d];
        }
        return off;
    }

    /// <inheritdoc/>
    public void ArgMax(StridedView x, int axis, StridedView y)
        => Dispatch("ArgMax", x.DType, () => ArgMaxT<float>(x, axis, y), () => ArgMaxT<double>(x, axis, y));

    private static void ArgMaxT<T>(StridedView xv, int axis, StridedView yv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var rank = xv.Rank;
        var kept = Enumerable.Range(0, rank).Where(d => d != axis).ToArray();
        var outerPlan = StridedLoop.Coalesce([.. kept.Select(d => xv.Shape[d])], [.. kept.Select(d => xv.Strides[d])]);
        long outer = 1;
        foreach (var d in kept) outer *= xv.Shape[d];
        int n = xv.Shape[axis], stride = xv.Strides[axis];
        T* x = P<T>(xv);
        var y = (int*)yv.Data;
        StridedLoop.ForRows(outer, n, (o0, o1) =>
        {
            for (var o = o0; o < o1; o++)
            {
                var p = x + OuterOffset(outerPlan, o);
                var best = 0;
                var bv = p[0];
                for (var i = 1; i < n; i++)
                {
                    var v = p[(long)i * stride];
                    if (v > bv || (T.IsNaN(v) && !T.IsNaN(bv)))
                    {
                        bv = v;
                        best = i;
                    }
                }
                y[o] = best;
            }
        });
    }
}
