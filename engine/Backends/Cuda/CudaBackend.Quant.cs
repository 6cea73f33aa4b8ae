namespace Frugal.Backends.Cuda;

internal sealed unsafe partial class CudaBackend
{
    private const string Quant = "quant.cu";

    // ---- packed low-bit weights ----

    /// <inheritdoc/>
    public void Quantize(in QuantView w, StridedView dense, in QuantizeArgs args)
    {
        var (q, a, shape) = (w, args, KernelAbi.QuantShape.From(w));
        Run(Quant, "quant_scales", q.Groups, (ref KernelArgs k) =>
        {
            k.Add(dense.Data);
            k.Add(q.Scales);
            k.Add(shape);
            k.Add((int)a.Scheme);
        });
        Run(Quant, "quant_codes", q.CodeBytes, (ref KernelArgs k) =>
        {
            k.Add(dense.Data);
            k.Add(q.Scales);
            k.Add(q.Codes);
            k.Add(shape);
            k.Add((int)a.Scheme);
            k.Add(a.Stochastic ? 1 : 0);
            k.Add(a.Seed);
            k.Add(a.Offset);
        });
    }

    /// <inheritdoc/>
    public void Dequantize(in QuantView w, StridedView dense)
    {
        var (q, shape) = (w, KernelAbi.QuantShape.From(w));
        Run(Quant, "quant_dequantize", q.Count, (ref KernelArgs k) =>
        {
            k.Add(q.Codes);
            k.Add(q.Scales);
            k.Add(dense.Data);
            k.Add(shape);
        });
    }

    /// <inheritdoc/>
    public void QuantMatMul(in QuantView w, bool transposed, StridedView x, StridedView y)
    {
        const int Tile = 16;
        var (q, shape, batch) = (w, KernelAbi.QuantShape.From(w), (long)x.Shape[0]);
        var outputs = transposed ? q.Rows : q.Cols;
        var tiles = (batch + Tile - 1) / Tile * ((outputs + Tile - 1) / Tile);
        Launch(Quant, "quant_matmul", tiles, perRow: true, (ref KernelArgs k) =>
        {
            k.Add(q.Codes);
            k.Add(q.Scales);
            k.Add(x.Data);
            k.Add(y.Data);
            k.Add(shape);
            k.Add(transposed ? 1 : 0);
            k.Add(batch);
        });
    }
}
