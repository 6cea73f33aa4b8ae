namespace Frugal.Backends.Cuda;

internal sealed unsafe partial class CudaBackend
{
    private const string Convolution = "conv.cu";

    // im2col columns per chunk of images: 32M values (128 MiB in F32) keep cuBLAS's products large.
    private const long ColumnBudgetElements = 32L << 20;

    // ---- convolution (im2col + cuBLAS) and pooling ----

    /// <inheritdoc/>
    public void Conv2d(in Conv2dArgs args, StridedView x, StridedView w, StridedView bias, StridedView y)
    {
        var (a, t) = (args, x.DType);
        var (s, g, size) = (FloatSuffix("Conv2d", t), KernelAbi.Window.From(a), t.SizeOf());
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        ConvChunks.Run(allocator, a, size, ColumnBudgetElements, "conv2d.output", (n0, b, cols, o) =>
        {
            Im2Col(s, g, x, n0, b, cols);
            Gemm(new GemmArgs(false, false, 1, a.OutC, b * ohw, ckk, 1, ckk, 0, b * ohw, 0, 0, b * ohw, 0), t, w.Data, cols, o);
            Run(Convolution, $"conv_output_{s}", (long)b * a.OutC * ohw, (ref KernelArgs k) =>
            {
                k.Add(o);
                k.Add(bias.Data);
                k.Add(g);
                k.Add(n0);
                k.Add(b);
                k.Add(y.Data);
            });
        });
    }

    /// <inheritdoc/>
    public void Conv2dBackwardInput(in Conv2dArgs args, StridedView dy, StridedView w, StridedView dx)
    {
        var (a, t) = (args, dy.DType);
        var (s, g, size) = (FloatSuffix("Conv2dBackwardInput", t), KernelAbi.Window.From(a), t.SizeOf());
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        ConvChunks.Run(allocator, a, size, ColumnBudgetElements, "conv2d.grad", (n0, b, cols, gathered) =>
        {
            GatherGrad(s, g, dy, n0, b, gathered);
            Gemm(new GemmArgs(true, false, 1, ckk, b * ohw, a.OutC, 1, ckk, 0, b * ohw, 0, 0, b * ohw, 0), t, w.Data, gathered, cols);
            Col2Im(s, g, cols, n0, b, dx);
        });
    }

    /// <inheritdoc/>
    public void Im2Col(in Conv2dArgs args, StridedView x, int n0, int images, StridedView cols)
        => Im2Col(FloatSuffix("Im2Col", x.DType), KernelAbi.Window.From(args), x, n0, images, cols.Data);

    /// <inheritdoc/>
    public void Col2Im(in Conv2dArgs args, StridedView cols, int n0, int images, StridedView dx)
        => Col2Im(FloatSuffix("Col2Im", cols.DType), KernelAbi.Window.From(args), cols.Data, n0, images, dx);

    private void Col2Im(string suffix, KernelAbi.Window g, nint cols, int n0, int b, StridedView dx)
        => Run(Convolution, $"col2im_{suffix}", (long)b * g.C * g.H * g.W, (ref KernelArgs k) =>
        {
            k.Add(cols);
            k.Add(g);
            k.Add(b);
            k.Add(dx.Data + (nint)((long)n0 * g.C * g.H * g.W * dx.DType.SizeOf()));
        });

    /// <inheritdoc/>
    public void Conv2dBackwardWeight(in Conv2dArgs args, StridedView x, StridedView dy, StridedView dw, StridedView dbias)
    {
        var (a, t) = (args, x.DType);
        var (s, g, size) = (FloatSuffix("Conv2dBackwardWeight", t), KernelAbi.Window.From(a), t.SizeOf());
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        ConvChunks.Run(allocator, a, size, ColumnBudgetElements, "conv2d.grad", (n0, b, cols, gathered) =>
        {
            GatherGrad(s, g, dy, n0, b, gathered);
            Im2Col(s, g, x, n0, b, cols);
            Gemm(new GemmArgs(false, true, 1, a.OutC, ckk, b * ohw, 1, b * ohw, 0, b * ohw, 0, n0 == 0 ? 0 : 1, ckk, 0), t, gathered, cols, dw.Data);
            if (dbias.Data != 0)
            {
                Run(Convolution, $"bias_grad_{s}", a.OutC, (ref KernelArgs k) =>
                {
                    k.Add(gathered);
                    k.Add((long)b * ohw);
                    k.Add(a.OutC);
                    k.Add(n0 == 0 ? 0 : 1);
                    k.Add(dbias.Data);
                });
            }
        });
    }

    private void Im2Col(string suffix, KernelAbi.Window g, StridedView x, int n0, int b, nint cols)
        => Run(Convolution, $"im2col_{suffix}", (long)g.C * g.KH * g.KW * b * g.OutH * g.OutW, (ref KernelArgs k) =>
        {
            k.Add(x.Data + (nint)((long)n0 * g.C * g.H * g.W * x.DType.SizeOf()));
            k.Add(g);
            k.Add(b);
            k.Add(cols);
        });

    private void GatherGrad(string suffix, KernelAbi.Window g, StridedView dy, int n0, int b, nint gathered)
        => Run(Convolution, $"gather_grad_{suffix}", (long)b * g.OutC * g.OutH * g.OutW, (ref KernelArgs k) =>
        {
            k.Add(dy.Data);
            k.Add(g);
            k.Add(n0);
            k.Add(b);
            k.Add(gathered);
        });

    /// <inheritdoc/>
    public void MaxPool2d(in Pool2dArgs args, StridedView x, StridedView y, StridedView argmax)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"maxpool_{FloatSuffix("MaxPool2d", x.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(g);
            k.Add(y.Data);
            k.Add(argmax.Data);
        });
    }

    /// <inheritdoc/>
    public void MaxPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView argmax, StridedView dx)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"maxpool_backward_{FloatSuffix("MaxPool2dBackward", dy.DType)}", (long)args.N * args.C, (ref KernelArgs k) =>
        {
            k.Add(dy.Data);
            k.Add(argmax.Data);
            k.Add(g);
            k.Add(dx.Data);
        });
    }

    /// <inheritdoc/>
    public void AvgPool2d(in Pool2dArgs args, StridedView x, StridedView y)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"avgpool_{FloatSuffix("AvgPool2d", x.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(g);
            k.Add(y.Data);
        });
    }

    /// <inheritdoc/>
    public void AvgPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView dx)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"avgpool_backward_{FloatSuffix("AvgPool2dBackward", dy.DType)}", (long)args.N * args.C, (ref KernelArgs k) =>
        {
            k.Add(dy.Data);
            k.Add(g);
            k.Add(dx.Data);
        });
    }
}
