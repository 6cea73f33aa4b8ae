using Frugal.Backends;

namespace Frugal;

public static partial class F
{
    /// <summary>2-D convolution (cross-correlation, as PyTorch): x [N, C, H, W], weight [OutC, C, KH, KW], bias [OutC] or null.</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias = null, int stride = 1, int padding = 0, int dilation = 1)
    {
        Check.Compatible("Conv2d", x, weight);
        Check.Float("Conv2d", x);
        Check.Rank("Conv2d", x, 4, "input");
        Check.Rank("Conv2d", weight, 4, "weight");
        if (x.Shape[1] != weight.Shape[1])
            throw new ShapeMismatchException($"Conv2d: input {x.Describe()} has {x.Shape[1]} channels, weight {weight.Describe()} expects {weight.Shape[1]}");
        if (bias is not null)
        {
            Check.Compatible("Conv2d", x, bias);
            Check.Shape("Conv2d", bias, new Shape(weight.Shape[0]), "bias");
        }
        var args = ConvArgs("Conv2d", x, weight.Shape[0], weight.Shape[2], weight.Shape[3], stride, padding, dilation);
        using var xc = x.Contiguous();
        using var wc = weight.Contiguous();
        using var bc = bias?.Contiguous();
        // Under autocast the input and weight are rounded to 16 bits (F32 accumulation) and only the 16-bit input is
        // kept for backward; the weight is referenced and rounded again there. The rounded F32 copies are Workspace.
        var low = Autocast.Current is { } l && x.DType == DType.F32 && weight.DType == DType.F32 ? l : (DType?)null;
        Tensor? x16 = null, xr = null, wr = null;
        if (low is { } lowType)
        {
            using var noGrad = Autograd.NoGrad();
            x16 = Cast(xc, lowType);
            using var work = Memory.MemoryContext.Use(Memory.MemoryCategory.Workspace, "autocast");
            xr = Cast(x16, DType.F32);
            wr = Rounded(wc, lowType);
        }
        var y = NewLike(new Shape(args.N, args.OutC, args.OutH, args.OutW), x);
        x.Backend.Conv2d(args, (xr ?? xc).View, (wr ?? wc).View, bc?.View ?? default, y.View);
        xr?.Dispose();
        wr?.Dispose();
        var node = bias is null ? Autograd.Record(y, "Conv2d", x, weight) : Autograd.Record(y, "Conv2d", x, weight, bias);
        if (node is not null)
        {
            var sx = node.NeedsGrad(1) ? node.Save(x16 ?? xc) : null;
            var sw = node.NeedsGrad(0) ? node.Save(wc) : null;
            node.Backward = g =>
            {
                using var gc = g.Contiguous();
                Tensor? dx = null, dw = null, db = null;
                if (sw is not null)
                {
                    dx = NewLike(x.Shape, x);
                    using var wUse = low is { } lw ? Workspace(() => Rounded(sw, lw)) : sw.Alias();
                    g.Backend.Conv2dBackwardInput(args, gc.View, wUse.View, dx.View);
                }
                var wantBias = bias is not null && node.NeedsGrad(2);
                if (sx is not null || wantBias)
                {
                    db = wantBias ? NewLike(bias!.Shape, x) : null;
                    dw = sx is null ? null : NewLike(weight.Shape, x);
                    if (dw is null)
                    {
                        using var s = Sum(gc, [0, 2, 3]);
                        g.Backend.Copy(s.View, db!.View);
                    }
                    else
                    {
                        using var xUse = low is not null ? Workspace(() => Cast(sx!, DType.F32)) : sx!.Alias();
                        g.Backend.Conv2dBackwardWeight(args, xUse.View, gc.View, dw.View, db?.View ?? default);
                    }
                }
                return bias is null ? [dx, dw] : [dx, dw, db];
            };
        }
        x16?.Dispose();
        return y;
    }

    /// <summary>A tensor made by <paramref name="make"/> as Workspace (owner "autocast").</summary>
    private static Tensor Workspace(Func<Tensor> make) => Workspace(make, "autocast");

    /// <summary>The geometry of a convolution of x [N, C, H, W] into outC channels, validated.</summary>
    private static Conv2dArgs ConvArgs(string op, Tensor x, int outC, int kh, int kw, int stride, int padding, int dilation)
    {
        if (stride < 1 || padding < 0 || dilation < 1)
            throw new ArgumentOutOfRangeException(nameof(stride), $"{op}: stride {stride}, padding {padding}, dilation {dilation} are invalid");
        var args = new Conv2dArgs(x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], outC, kh, kw, stride, stride, padding, padding, dilation, dilation);
        if (args.OutH <= 0 || args.OutW <= 0)
            throw new ShapeMismatchException($"{op}: kernel {kh}x{kw} (dilation {dilation}, padding {padding}) does not fit input {x.Describe()}");
        return args;
    }

    private static Pool2dArgs PoolArgs(string op, Tensor x, int kernel, int stride, int padding)
    {
        Check.Float(op, x);
        Check.Rank(op, x, 4, "input");
        if (kernel < 1 || stride < 1 || padding < 0 || padding * 2 > kernel)
            throw new ArgumentOutOfRangeException(nameof(kernel), $"{op}: kernel {kernel}, stride {stride}, padding {padding} are invalid (padding at most half the kernel)");
        var a = new Pool2dArgs(x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], kernel, kernel, stride, stride, padding, padding);
        if (a.OutH <= 0 || a.OutW <= 0)
            throw new ShapeMismatchException($"{op}: window {kernel} does not fit input {x.Describe()}");
        return a;
    }

    /// <summary>Max pooling over kernel×kernel windows (stride defaults to the kernel).</summary>
    public static Tensor MaxPool2d(Tensor x, int kernel, int? stride = null, int padding = 0)
    {
        var args = PoolArgs("MaxPool2d", x, kernel, stride ?? kernel, padding);
        using var xc = x.Contiguous();
        var shape = new Shape(args.N, args.C, args.OutH, args.OutW);
        var y = NewLike(shape, x);
        var argmax = NewLike(shape, x, DType.I32);
        x.Backend.MaxPool2d(args, xc.View, y.View, argmax.View);
        using (argmax)
        {
            var node = Autograd.Record(y, "MaxPool2d", x);
            if (node is not null)
            {
                var sa = node.Save(argmax);
                node.Backward = g =>
                {
                    using var gc = g.Contiguous();
                    var dx = NewLike(x.Shape, x);
                    g.Backend.MaxPool2dBackward(args, gc.View, sa.View, dx.View);
                    return [dx];
                };
            }
        }
        return y;
    }

    /// <summary>Average pooling over kernel×kernel windows (stride defaults to the kernel).</summary>
    public static Tensor AvgPool2d(Tensor x, int kernel, int? stride = null, int padding = 0)
    {
        var args = PoolArgs("AvgPool2d", x, kernel, stride ?? kernel, padding);
        using var xc = x.Contiguous();
        var y = NewLike(new Shape(args.N, args.C, args.OutH, args.OutW), x);
        x.Backend.AvgPool2d(args, xc.View, y.View);
        var node = Autograd.Record(y, "AvgPool2d", x);
        if (node is not null)
        {
            node.Backward = g =>
            {
                using var gc = g.Contiguous();
                var dx = NewLike(x.Shape, x);
                g.Backend.AvgPool2dBackward(args, gc.View, dx.View);
                return [dx];
            };
        }
        return y;
    }
}
