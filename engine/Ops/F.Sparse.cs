using Frugal.Backends;
using Frugal.Formats;
using Frugal.Memory;

namespace Frugal;

/// <summary>A block-sparse weight operand [Rows, Cols] (CSR over Block × Block blocks; Block 1 is CSR): its I32 row
/// pointers [Rows / Block + 1] and block column indices [stored blocks] (the pattern, not trained) and its F32 values
/// [stored blocks · Block²] (trained), in the layout of <see cref="SparseFormat"/>.</summary>
public readonly record struct SparseOperand(int Rows, int Cols, int Block, Tensor RowPtr, Tensor ColIdx, Tensor Values)
{
    /// <summary>A regrowth request (RigL, SNFS) the product's backward answers with the dense gradient's largest
    /// entries off <see cref="GrowthScores"/>'s pattern, or null: set by the sparse weight that owns the request.</summary>
    internal (GrowthScores Scores, CsrPattern Pattern)? Growth { get; init; }
}

public static partial class F
{
    // im2col columns per chunk of images in a sparse convolution: 4M values (16 MiB in F32), as the CPU's dense one.
    private const long SparseColumnBudget = 4L << 20;

    /// <summary>
    /// y [batch, rows] = x [batch, cols] · Wᵀ (+ bias) for a block-sparse weight W. Backward gives dx = dy·W and the
    /// values' gradient on the pattern only (SDDMM): the dense dW is never formed.
    /// </summary>
    /// <exception cref="ShapeMismatchException">Shapes, dtypes or devices of x, the pattern, the values or the bias disagree.</exception>
    public static Tensor SparseLinear(Tensor x, SparseOperand weight, Tensor? bias = null)
    {
        const string op = "SparseLinear";
        var view = CsrOperand(op, x, weight);
        var (rows, cols) = (weight.Rows, weight.Cols);
        if (x.Rank != 2 || x.Shape[1] != cols)
            throw new ShapeMismatchException($"{op}: input {x.Describe()} does not fit a [{rows}, {cols}] weight (expects [batch, {cols}])");
        var batch = x.Shape[0];
        var xT = Transposed(x, op);
        Tensor y;
        using (var yT = Tensor.Empty(new Shape(rows, batch), DType.F32, x.Device))
        {
            x.Backend.CsrMultiplyTransposed(view, xT.View, yT.View);
            using var yView = yT.Transpose(0, 1);
            y = yView.Contiguous();
        }
        var (needDx, needDValues) = (x.RequiresGrad, weight.Values.RequiresGrad);
        var node = Autograd.Record(y, op, x, weight.Values);
        if (node is not null)
        {
            // x itself is saved (the batch or the previous layer's output, alive anyway), not its transposed copy:
            // backward transposes it again into Workspace, so a sparse layer keeps no second copy of its input.
            var savedX = node.Save(x);
            KeepValues(node, weight);
            node.Backward = g =>
            {
                using var gT0 = g.Transpose(0, 1);
                using var gT = gT0.Contiguous();
                using var savedXT = weight.Growth is not null || needDValues ? Transposed(savedX, op) : null;
                Tensor? dx = null;
                if (needDx)
                {
                    using var dxT = Tensor.Empty(new Shape(cols, batch), DType.F32, g.Device);
                    g.Backend.CsrMultiply(view, gT.View, dxT.View);
                    using var dxView = dxT.Transpose(0, 1);
                    dx = dxView.Contiguous();
                }
                // The dense gradient's rows r0 .. r0 + n are dYᵀ[r0 .. r0 + n) · X: one GEMM per chunk.
                weight.Growth?.Scores.Fill(weight.Growth.Value.Pattern, weight.Block, g.Device, (r0, n, chunk) => g.Backend.Gemm(
                    new GemmArgs(false, true, 1, n, cols, batch, 1, batch, 0, batch, 0, 0, cols, 0), DType.F32,
                    gT.View.Data + (nint)((long)r0 * batch * sizeof(float)), savedXT!.View.Data, chunk.View.Data));
                Tensor? dValues = null;
                if (needDValues)
                {
                    dValues = Tensor.Empty(weight.Values.Shape, DType.F32, g.Device);
                    g.Backend.CsrSampledGradient(view, gT.View, savedXT!.View, dValues.View);
                }
                return [dx, dValues];
            };
        }
        xT.Dispose();
        return WithBias(op, y, bias, [rows]);
    }

    /// <summary>A contiguous copy of the matrix xᵀ, in Workspace (the sparse kernels take the batch as the inner
    /// dimension).</summary>
    private static Tensor Transposed(Tensor x, string owner)
    {
        using var work = MemoryContext.Use(MemoryCategory.Workspace, owner);
        using var t = x.Transpose(0, 1);
        return t.Contiguous();
    }

    /// <summary>
    /// 2-D convolution (as <see cref="Conv2d(Tensor, Tensor, Tensor?, int, int, int)"/>) of x [N, C, H, W] with a block-sparse weight W [OutC, C·K·K] (the
    /// dense [OutC, C, K, K] flattened): im2col columns of a few images at a time, then the sparse product, so the
    /// dense weight is never formed. Backward: dx through Wᵀ and col2im, the values' gradient by SDDMM on the pattern
    /// only, summed over the image chunks. The columns are Workspace, recomputed in backward from the saved input.
    /// </summary>
    /// <exception cref="ShapeMismatchException">Shapes, dtypes or devices of x, the weight or the bias disagree.</exception>
    public static Tensor SparseConv2d(Tensor x, SparseOperand weight, int kernel, Tensor? bias = null, int stride = 1, int padding = 0, int dilation = 1)
    {
        const string op = "SparseConv2d";
        var view = CsrOperand(op, x, weight);
        Check.Rank(op, x, 4, "input");
        if (kernel < 1 || weight.Cols != x.Shape[1] * kernel * kernel)
            throw new ShapeMismatchException($"{op}: input {x.Describe()} with kernel {kernel} has {x.Shape[1]}·{kernel}·{kernel} patch values, the [{weight.Rows}, {weight.Cols}] weight expects {weight.Cols}");
        var a = ConvArgs(op, x, weight.Rows, kernel, kernel, stride, padding, dilation);
        int ckk = weight.Cols, ohw = a.OutH * a.OutW, chunk = a.ImagesPerChunk(SparseColumnBudget);
        var xc = x.Contiguous();
        var y = Tensor.Empty(new Shape(a.N, a.OutC, a.OutH, a.OutW), DType.F32, x.Device);
        using (Autograd.NoGrad())
        {
            ForEachImageChunk(a, chunk, (n0, b) =>
            {
                using var cols = Columns(a, xc, n0, b);
                using var yT = Tensor.Empty(new Shape(a.OutC, b * ohw), DType.F32, x.Device, MemoryCategory.Workspace, "sparse_conv2d.output");
                x.Backend.CsrMultiplyTransposed(view, cols.View, yT.View);
                // yT is [OutC, b, OH·OW]; y wants [b, OutC, OH·OW].
                using var from0 = yT.Reshape(a.OutC, b, ohw);
                using var from = from0.Permute(1, 0, 2);
                using var to0 = y.Narrow(0, n0, b);
                using var to = to0.Reshape(b, a.OutC, ohw);
                CopyInto(to, from);
            });
        }
        var (needDx, needDValues) = (x.RequiresGrad, weight.Values.RequiresGrad);
        var node = Autograd.Record(y, op, x, weight.Values);
        if (node is not null)
        {
            var savedX = node.Save(xc);
            KeepValues(node, weight);
            node.Backward = g =>
            {
                using var gc = g.Contiguous();
                var dx = needDx ? Tensor.Empty(x.Shape, DType.F32, g.Device) : null;
                var dValues = needDValues ? Tensor.Zeros(weight.Values.Shape, DType.F32, g.Device) : null;
                ForEachImageChunk(a, chunk, (n0, b) =>
                {
                    using var gT = ChannelMajor(a, gc, n0, b);
                    if (dx is not null)
                    {
                        using var dcols = Tensor.Empty(new Shape(ckk, b * ohw), DType.F32, g.Device, MemoryCategory.Workspace, "conv2d.columns");
                        g.Backend.CsrMultiply(view, gT.View, dcols.View);
                        g.Backend.Col2Im(a, dcols.View, n0, b, dx.View);
                    }
                    if (dValues is not null)
                    {
                        using var cols = Columns(a, savedX, n0, b);
                        using var part = Tensor.Empty(weight.Values.Shape, DType.F32, g.Device, MemoryCategory.Workspace, "sparse_conv2d.grad");
                        g.Backend.CsrSampledGradient(view, gT.View, cols.View, part.View);
                        g.Backend.Binary(Backends.BinaryOp.Add, dValues.View, part.View, dValues.View);
                    }
                });
                // The dense gradient's rows r0 .. r0 + n: Σ over image chunks of dYᵀ rows · columnsᵀ.
                weight.Growth?.Scores.Fill(weight.Growth.Value.Pattern, weight.Block, g.Device, (r0, n, rowsOut) => ForEachImageChunk(a, chunk, (n0, b) =>
                {
                    using var gT = ChannelMajor(a, gc, n0, b);
                    using var cols = Columns(a, savedX, n0, b);
                    g.Backend.Gemm(new GemmArgs(false, true, 1, n, ckk, b * ohw, 1, b * ohw, 0, b * ohw, 0, n0 == 0 ? 0 : 1, ckk, 0), DType.F32,
                        gT.View.Data + (nint)((long)r0 * b * ohw * sizeof(float)), cols.View.Data, rowsOut.View.Data);
                }));
                return [dx, dValues];
            };
        }
        xc.Dispose();
        return WithBias(op, y, bias, [a.OutC, 1, 1]);
    }

    /// <summary>Validates a sparse weight against the input's device and dtype and gives its kernel view.</summary>
    private static CsrView CsrOperand(string op, Tensor x, SparseOperand w)
    {
        foreach (var t in new[] { x, w.RowPtr, w.ColIdx, w.Values })
        {
            Check.Live(op, t);
            Check.SameDevice(op, x, t);
        }
        if (x.DType != DType.F32 || w.Values.DType != DType.F32)
            throw new ShapeMismatchException($"{op}: x and values must be f32, got {x.Describe()} and {w.Values.Describe()}");
        if (w.RowPtr.DType != DType.I32 || w.ColIdx.DType != DType.I32)
            throw new ShapeMismatchException($"{op}: the pattern must be i32, got {w.RowPtr.Describe()} and {w.ColIdx.Describe()}");
        if (w.Block < 1 || w.Rows <= 0 || w.Cols <= 0 || w.Rows % w.Block != 0 || w.Cols % w.Block != 0)
            throw new ShapeMismatchException($"{op}: a [{w.Rows}, {w.Cols}] weight is not a whole number of {w.Block}×{w.Block} blocks");
        Check.Shape(op, w.RowPtr, new Shape(w.Rows / w.Block + 1), "row pointers");
        Check.Rank(op, w.ColIdx, 1, "column indices");
        Check.Shape(op, w.Values, new Shape(w.ColIdx.Shape[0] * w.Block * w.Block), $"values ({w.Block}² per stored block)");
        return new CsrView(w.Rows / w.Block, w.Cols / w.Block, w.ColIdx.Shape[0], w.RowPtr.View.Data, w.ColIdx.View.Data, w.Values.View.Data, w.Block);
    }

    /// <summary>Keeps transient values (a composition's dequantized values) alive for the backward, which reads them
    /// through the kernel view; a parameter's values live anyway.</summary>
    private static void KeepValues(GradNode node, SparseOperand weight)
    {
        if (!weight.Values.IsLeaf)
            node.Save(weight.Values);
    }

    /// <summary>y + bias viewed as <paramref name="shape"/> (broadcast), or y itself without a bias.</summary>
    private static Tensor WithBias(string op, Tensor y, Tensor? bias, int[] shape)
    {
        if (bias is null)
            return y;
        using (y)
        {
            Check.Compatible(op, y, bias);
            Check.Shape(op, bias, new Shape(shape[0]), "bias");
            using var b = bias.Reshape(shape);
            return Add(y, b);
        }
    }

    private static void ForEachImageChunk(in Conv2dArgs a, int chunk, Action<int, int> body)
    {
        for (var n0 = 0; n0 < a.N; n0 += chunk)
            body(n0, Math.Min(chunk, a.N - n0));
    }

    /// <summary>The im2col columns [C·K·K, b·OH·OW] of images n0 .. n0 + b (Workspace).</summary>
    private static Tensor Columns(in Conv2dArgs a, Tensor xc, int n0, int b)
    {
        var cols = Tensor.Empty(new Shape(a.C * a.KH * a.KW, b * a.OutH * a.OutW), DType.F32, xc.Device, MemoryCategory.Workspace, "conv2d.columns");
        xc.Backend.Im2Col(a, xc.View, n0, b, cols.View);
        return cols;
    }

    /// <summary>dy of images n0 .. n0 + b as [OutC, b·OH·OW] (Workspace): the batch-minor layout of the sparse kernels.</summary>
    private static Tensor ChannelMajor(in Conv2dArgs a, Tensor gc, int n0, int b)
    {
        var ohw = a.OutH * a.OutW;
        var gT = Tensor.Empty(new Shape(a.OutC, b * ohw), DType.F32, gc.Device, MemoryCategory.Workspace, "conv2d.grad");
        using var from0 = gc.Narrow(0, n0, b);
        using var from1 = from0.Reshape(b, a.OutC, ohw);
        using var from = from1.Permute(1, 0, 2);
        using var to = gT.Reshape(a.OutC, b, ohw);
        CopyInto(to, from);
        return gT;
    }
}
