namespace Frugal.Backends.Cuda;

internal sealed unsafe partial class CudaBackend
{
    private const string Reductions = "reduce.cu";

    // ---- reductions ----

    /// <inheritdoc/>
    public void Reduce(ReduceOp op, StridedView x, int[] axes, StridedView y)
    {
        var kept = Enumerable.Range(0, x.Rank).Where(d => !axes.Contains(d)).ToArray();
        var keptView = Select(x, kept);
        var reducedView = Select(x, axes);
        // A thread per output when there are many; a block per output when few outputs each reduce many values.
        var perBlock = y.Numel < 4096 && reducedView.Numel >= 1024;
        Launch(Reductions, $"{(perBlock ? "reduce_blocks" : "reduce")}_{FloatSuffix("Reduce", x.DType)}", y.Numel, perBlock, (ref KernelArgs k) =>
        {
            k.Add((int)op);
            k.Add(x.Data);
            k.Add(KernelAbi.Strided.From(keptView, "kept axes of x"));
            k.Add(KernelAbi.Strided.From(reducedView, "reduced axes of x"));
            k.Add(reducedView.Numel);
            k.Add(y.Data);
            k.Add(y.Numel);
        });
    }

    /// <inheritdoc/>
    public void ArgMax(StridedView x, int axis, StridedView y)
    {
        var keptView = Select(x, [.. Enumerable.Range(0, x.Rank).Where(d => d != axis)]);
        Run(Reductions, $"argmax_{FloatSuffix("ArgMax", x.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(KernelAbi.Strided.From(keptView, "kept axes of x"));
            k.Add((long)x.Shape[axis]);
            k.Add((long)x.Strides[axis]);
            k.Add(y.Data);
            k.Add(y.Numel);
        });
    }

    /// <summary>The axes <paramref name="axes"/> of <paramref name="v"/>, in that order, as a view (same data).</summary>
    private static StridedView Select(StridedView v, int[] axes)
        => new(v.Data, v.DType, [.. axes.Select(d => v.Shape[d])], [.. axes.Select(d => v.Strides[d])]);
}
