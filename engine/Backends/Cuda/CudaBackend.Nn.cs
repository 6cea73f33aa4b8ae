namespace Frugal.Backends.Cuda;

internal sealed unsafe partial class CudaBackend
{
    private const string Rows = "rows.cu";
    private const string Indexing = "indexing.cu";

    // ---- rows: softmax, cross-entropy, layer normalisation ----

    /// <inheritdoc/>
    public void Softmax(StridedView x, StridedView y, bool log)
        => RunRows($"softmax_{FloatSuffix("Softmax", x.DType)}", x, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(y.Data);
            AddRowsCols(ref k, x);
            k.Add(log ? 1 : 0);
        });

    /// <inheritdoc/>
    public void SoftmaxBackward(StridedView y, StridedView dy, StridedView dx, bool log)
        => RunRows($"softmax_backward_{FloatSuffix("SoftmaxBackward", y.DType)}", y, (ref KernelArgs k) =>
        {
            k.Add(y.Data);
            k.Add(dy.Data);
            k.Add(dx.Data);
            AddRowsCols(ref k, y);
            k.Add(log ? 1 : 0);
        });

    /// <inheritdoc/>
    public void CrossEntropy(StridedView logits, StridedView targets, StridedView loss, int ignoreIndex)
        => RunRows($"cross_entropy_{FloatSuffix("CrossEntropy", logits.DType)}", logits, (ref KernelArgs k) =>
        {
            k.Add(logits.Data);
            k.Add(targets.Data);
            k.Add(loss.Data);
            AddRowsCols(ref k, logits);
            k.Add(ignoreIndex);
        });

    /// <inheritdoc/>
    public void CrossEntropyBackward(StridedView logits, StridedView targets, StridedView dloss, StridedView dlogits, int ignoreIndex)
        => RunRows($"cross_entropy_backward_{FloatSuffix("CrossEntropyBackward", logits.DType)}", logits, (ref KernelArgs k) =>
        {
            k.Add(logits.Data);
            k.Add(targets.Data);
            k.Add(dloss.Data);
            k.Add(dlogits.Data);
            AddRowsCols(ref k, logits);
            k.Add(ignoreIndex);
        });

    /// <inheritdoc/>
    public void LayerNorm(StridedView x, StridedView gamma, StridedView beta, double eps, StridedView y, StridedView mean, StridedView rstd)
        => RunRows($"layernorm_{FloatSuffix("LayerNorm", x.DType)}", x, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(gamma.Data);
            k.Add(beta.Data);
            AddScalar(ref k, x.DType, eps);
            k.Add(y.Data);
            k.Add(mean.Data);
            k.Add(rstd.Data);
            AddRowsCols(ref k, x);
        });

    /// <inheritdoc/>
    public void LayerNormBackward(StridedView x, StridedView gamma, StridedView mean, StridedView rstd, StridedView dy, StridedView dx, StridedView dgamma, StridedView dbeta)
    {
        var suffix = FloatSuffix("LayerNormBackward", x.DType);
        RunRows($"layernorm_backward_input_{suffix}", x, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(gamma.Data);
            k.Add(mean.Data);
            k.Add(rstd.Data);
            k.Add(dy.Data);
            k.Add(dx.Data);
            AddRowsCols(ref k, x);
        });
        if (dgamma.Data == 0 && dbeta.Data == 0)
            return;
        Run(Rows, $"layernorm_backward_params_{suffix}", x.Shape[1], (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(mean.Data);
            k.Add(rstd.Data);
            k.Add(dy.Data);
            k.Add(dgamma.Data);
            k.Add(dbeta.Data);
            AddRowsCols(ref k, x);
        });
    }

    // ---- indexing ----

    /// <inheritdoc/>
    public void IndexSelect(StridedView src, int axis, StridedView index, StridedView dst)
    {
        var (_, inner) = src.AroundAxis(axis);
        Run(Indexing, "index_select_bytes", dst.Numel, (ref KernelArgs k) =>
        {
            k.Add(src.Data);
            k.Add(index.Data);
            k.Add(dst.Data);
            k.Add((long)index.Shape[0]);
            k.Add((long)src.Shape[axis]);
            k.Add(inner);
            k.Add((long)src.DType.SizeOf());
            k.Add(dst.Numel);
        });
    }

    /// <inheritdoc/>
    public void IndexAdd(StridedView src, int axis, StridedView index, StridedView dst)
    {
        var (outer, inner) = dst.AroundAxis(axis);
        Run(Indexing, $"index_add_{FloatSuffix("IndexAdd", src.DType)}", outer * inner, (ref KernelArgs k) =>
        {
            k.Add(src.Data);
            k.Add(index.Data);
            k.Add(dst.Data);
            k.Add(outer);
            k.Add((long)index.Shape[0]);
            k.Add((long)dst.Shape[axis]);
            k.Add(inner);
        });
    }

    private void RunRows(string entry, StridedView rowsByCols, ArgWriter write) => Launch(Rows, entry, rowsByCols.Shape[0], perRow: true, write);

    private static void AddRowsCols(ref KernelArgs args, StridedView rowsByCols)
    {
        args.Add((long)rowsByCols.Shape[0]);
        args.Add((long)rowsByCols.Shape[1]);
    }
}
