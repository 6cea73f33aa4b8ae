using Frugal.Backends;
using Frugal.Formats;
using Frugal.Memory;

namespace Frugal;

/// <summary>A quantized weight operand [Rows, Cols] in <see cref="Format"/>'s layout: U8 packed codes
/// [<see cref="QuantizedFormat.CodeBytes"/>] and F32 scales [groups, 2] (scale and zero of each group of
/// <see cref="Group"/> values along a row).</summary>
public sealed record QuantizedOperand(Tensor Codes, Tensor Scales, QuantizedFormat Format, int Rows, int Cols, int Group)
{
    /// <summary>The kernel view.</summary>
    internal QuantView View => new(Rows, Cols, Format.Bits, Group, Codes.View.Data, Scales.View.Data);

    /// <summary>Number of groups.</summary>
    public long Groups => (long)Rows * Cols / Group;

    /// <summary>Frees the codes and the scales.</summary>
    public void DisposeParts()
    {
        Codes.Dispose();
        Scales.Dispose();
    }
}

public static partial class F
{
    /// <summary>Codes and scales of <paramref name="dense"/> (F32, [rows, ...] read as [rows, cols]) in
    /// <paramref name="format"/>: each group's scale and zero from its scheme, codes rounded to nearest, or
    /// stochastically with <paramref name="stochastic"/> = (seed, offset) (unbiased: the expected value of each
    /// dequantized weight is the weight). Not differentiable (see <see cref="QuantizeSte"/>).</summary>
    /// <exception cref="ShapeMismatchException">Not F32, or rank 0.</exception>
    /// <exception cref="ArgumentException">The format's group does not divide the columns.</exception>
    public static QuantizedOperand Quantize(Tensor dense, QuantizedFormat format, (ulong Seed, ulong Offset)? stochastic = null)
    {
        const string op = "Quantize";
        ArgumentNullException.ThrowIfNull(format);
        Check.Live(op, dense);
        if (dense.DType != DType.F32 || dense.Rank < 1)
            throw new ShapeMismatchException($"{op}: {format} quantizes f32 weights of rank ≥ 1, got {dense.Describe()}");
        var rows = dense.Shape[0];
        var cols = checked((int)(dense.Numel / Math.Max(rows, 1)));
        var group = format.GroupFor(rows, cols);
        using var xc = dense.IsContiguous ? dense.Alias() : dense.Contiguous();
        var codes = Tensor.Empty(new Shape(checked((int)format.CodeBytes(rows, cols))), DType.U8, dense.Device);
        var scales = Tensor.Empty(new Shape(checked((int)((long)rows * cols / group)), 2), DType.F32, dense.Device);
        var w = new QuantizedOperand(codes, scales, format, rows, cols, group);
        var (seed, offset) = stochastic ?? (0, 0);
        dense.Backend.Quantize(w.View, xc.View, new QuantizeArgs(format.Scheme, stochastic is not null, seed, offset));
        return w;
    }

    /// <summary>
    /// The quantized weight of latent full-precision weights, differentiable by the straight-through estimator: the
    /// codes' gradient (a dense [rows, cols] from the product that uses them) passes to <paramref name="latent"/>,
    /// clipped to |w| ≤ 1 for ternary and binary codes (XNOR-Net's and BinaryConnect's recipe; the linear schemes'
    /// grid covers every latent value, so nothing is clipped there). The codes and scales (and the clipping's 1-byte
    /// mask) are Activation memory kept for backward.
    /// </summary>
    /// <exception cref="ShapeMismatchException">Not F32, or rank 0.</exception>
    /// <exception cref="ArgumentException">The format's group does not divide the columns.</exception>
    public static QuantizedOperand QuantizeSte(Tensor latent, QuantizedFormat format)
    {
        QuantizedOperand w;
        using (Autograd.NoGrad())
        using (MemoryContext.Use(MemoryCategory.Activation, latent.Name is { } n ? n + ".codes" : "quantize_ste"))
            w = Quantize(latent, format);
        var node = Autograd.Record(w.Codes, "QuantizeSte", latent);
        if (node is not null)
        {
            // Ternary and binary clip at |w| ≤ 1: the 1-byte mask is made now and kept (not the F32 latent), so
            // backward makes nothing but the gradient itself.
            Tensor? inside = null;
            if (format.Scheme is QuantScheme.Ternary or QuantScheme.Binary)
            {
                using (Autograd.NoGrad())
                using (MemoryContext.Use(MemoryCategory.Activation, latent.Name is { } m ? m + ".ste_mask" : "ste_mask"))
                {
                    using var abs = latent.Abs();
                    using var one = Tensor.Full(new Shape(), 1, DType.F32, latent.Device);
                    using var mask = Le(abs, one);
                    inside = node.Save(mask);
                }
            }
            node.Backward = g =>
            {
                using var shaped = g.Reshape(latent.Shape.Dims);
                if (inside is null)
                    return [shaped.Contiguous()];
                using var zero = Tensor.Zeros(new Shape(), DType.F32, g.Device);
                return [Where(inside, shaped, zero)];
            };
        }
        return w;
    }

    /// <summary>The dense weight of <paramref name="weight"/> viewed as <paramref name="shape"/> (rows first): for
    /// products that have no fused kernel (convolutions). The gradient passes to the codes (a master-free weight,
    /// or the straight-through estimator of latent ones).</summary>
    /// <exception cref="ShapeMismatchException">The shape does not hold [Rows, Cols].</exception>
    public static Tensor Dequantize(QuantizedOperand weight, Shape shape)
    {
        const string op = "Dequantize";
        var view = QuantOperand(op, weight);
        if (shape.Rank < 1 || shape[0] != weight.Rows || shape.Numel != (long)weight.Rows * weight.Cols)
            throw new ShapeMismatchException($"{op}: shape {shape} does not hold a [{weight.Rows}, {weight.Cols}] weight");
        var y = Tensor.Empty(shape, DType.F32, weight.Codes.Device);
        weight.Codes.Backend.Dequantize(view, y.View);
        var node = Autograd.Record(y, op, weight.Codes);
        if (node is not null)
            node.Backward = g => [g.Contiguous()];
        return y;
    }

    /// <summary>
    /// y [batch, rows] = x [batch, cols] · Wᵀ (+ bias) for a quantized weight W, the dequantization fused in the
    /// product. Backward: dx = dy·W (fused too) and, when the codes take a gradient, the dense dW = dyᵀ·x (F32
    /// [rows, cols], for the straight-through estimator or a master-free update).
    /// With <paramref name="activationBits"/> k in 1..7, x is first quantized DoReFa-style to k bits,
    /// round(clamp(x, 0, 1)·(2^k − 1)) / (2^k − 1), and only its 1-byte codes are kept for backward (a quarter of the
    /// F32 input); the input's gradient passes where 0 ≤ x ≤ 1 (straight-through with clipping).
    /// </summary>
    /// <exception cref="ShapeMismatchException">Shapes, dtypes or devices of x, the weight or the bias disagree.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Activation bits outside 0..7.</exception>
    public static Tensor QuantizedLinear(Tensor x, QuantizedOperand weight, Tensor? bias = null, int activationBits = 0)
    {
        const string op = "QuantizedLinear";
        var view = QuantOperand(op, weight);
        Check.Live(op, x);
        Check.SameDevice(op, x, weight.Codes);
        if (activationBits is < 0 or > 7)
            throw new ArgumentOutOfRangeException(nameof(activationBits), $"{op}: activation bits must be 1..7 (0: not quantized), got {activationBits}");
        var (rows, cols) = (weight.Rows, weight.Cols);
        if (x.DType != DType.F32 || x.Rank != 2 || x.Shape[1] != cols)
            throw new ShapeMismatchException($"{op}: input {x.Describe()} does not fit a {weight.Format} [{rows}, {cols}] weight (expects f32 [batch, {cols}])");
        var batch = x.Shape[0];
        Tensor? xCodes = null;
        using var xc = activationBits == 0 ? (x.IsContiguous ? x.Alias() : x.Contiguous()) : null;
        var input = xc;
        if (activationBits > 0)
        {
            using (Autograd.NoGrad())
                xCodes = ActivationCodes(x, activationBits);
            input = Workspace(() => ActivationValues(xCodes, activationBits), op);
        }
        var y = Tensor.Empty(new Shape(batch, rows), DType.F32, x.Device);
        x.Backend.QuantMatMul(view, true, input!.View, y.View);
        var (needDx, needDw) = (x.RequiresGrad, weight.Codes.RequiresGrad);
        var node = Autograd.Record(y, op, x, weight.Codes);
        if (node is not null)
        {
            var savedX = needDw ? node.Save(xCodes ?? input) : null;
            var savedMask = needDx && xCodes is not null ? node.Save(xCodes) : null;
            // Latent codes are transients that only this node keeps alive; a master-free weight is a parameter.
            var savedCodes = weight.Codes.IsLeaf ? weight.Codes : node.Save(weight.Codes);
            var savedScales = weight.Codes.IsLeaf ? weight.Scales : node.Save(weight.Scales);
            node.Backward = g =>
            {
                using var gc = g.Contiguous();
                var w = view with { Codes = savedCodes.View.Data, Scales = savedScales.View.Data };
                Tensor? dx = null;
                if (needDx)
                {
                    dx = Tensor.Empty(new Shape(batch, cols), DType.F32, g.Device);
                    g.Backend.QuantMatMul(w, false, gc.View, dx.View);
                    if (savedMask is not null)
                    {
                        using var raw = dx;
                        using var f = Cast(savedMask, DType.F32);
                        using var top = Tensor.Full(new Shape(), (1 << activationBits) - 1, DType.F32, g.Device);
                        using var inside = Le(f, top);
                        using var zero = Tensor.Zeros(new Shape(), DType.F32, g.Device);
                        dx = Where(inside, raw, zero);
                    }
                }
                Tensor? dw = null;
                if (savedX is not null)
                {
                    using var xs = activationBits == 0 ? savedX.Alias() : Workspace(() => ActivationValues(savedX, activationBits), op);
                    dw = Tensor.Empty(new Shape(rows, cols), DType.F32, g.Device);
                    g.Backend.Gemm(new GemmArgs(true, false, 1, rows, cols, batch, 1, rows, 0, cols, 0, 0, cols, 0), DType.F32,
                        gc.View.Data, xs.View.Data, dw.View.Data);
                }
                return [dx, dw];
            };
        }
        if (activationBits > 0)
        {
            input.Dispose();
            xCodes!.Dispose();
        }
        return WithBias(op, y, bias, [rows]);
    }

    /// <summary>Validates a quantized weight operand (live, on one device, contiguous U8 codes and F32 scales of the
    /// format's sizes, a group that divides the columns) and gives its kernel view.</summary>
    /// <exception cref="ShapeMismatchException">A part does not fit, naming it.</exception>
    private static QuantView QuantOperand(string op, QuantizedOperand weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        Check.Live(op, weight.Codes);
        Check.Live(op, weight.Scales);
        Check.SameDevice(op, weight.Codes, weight.Scales);
        var (rows, cols) = (weight.Rows, weight.Cols);
        if (rows <= 0 || cols <= 0 || weight.Group <= 0 || cols % weight.Group != 0)
            throw new ShapeMismatchException($"{op}: a {weight.Format} [{rows}, {cols}] weight cannot have groups of {weight.Group}");
        if (weight.Codes.DType != DType.U8 || weight.Scales.DType != DType.F32 || !weight.Codes.IsContiguous || !weight.Scales.IsContiguous)
            throw new ShapeMismatchException($"{op}: {weight.Format} needs contiguous u8 codes and f32 scales, got {weight.Codes.Describe()} and {weight.Scales.Describe()}");
        Check.Shape(op, weight.Codes, new Shape(checked((int)weight.Format.CodeBytes(rows, cols))), $"codes of a {weight.Format} [{rows}, {cols}] weight");
        Check.Shape(op, weight.Scales, new Shape(checked((int)weight.Groups), 2), $"scales of a {weight.Format} [{rows}, {cols}] weight in groups of {weight.Group}");
        return weight.View;
    }

    /// <summary>DoReFa activation codes (U8): round(clamp(x, 0, 1)·L) for L = 2^bits − 1, with two more states for the
    /// clipped inputs, L + 1 below 0 (read as 0) and L + 2 above 1 (read as 1), so backward knows where to clip.</summary>
    private static Tensor ActivationCodes(Tensor x, int bits)
    {
        var levels = (1 << bits) - 1;
        using var zero = Tensor.Zeros(new Shape(), DType.F32, x.Device);
        using var one = Tensor.Full(new Shape(), 1, DType.F32, x.Device);
        using var low = Maximum(x, zero);
        using var clamped = Minimum(low, one);
        using var scaled = clamped.Mul(levels);
        using var below = Lt(x, zero);
        using var above = Gt(x, one);
        using var belowCode = Tensor.Full(new Shape(), levels + 1, DType.F32, x.Device);
        using var aboveCode = Tensor.Full(new Shape(), levels + 2, DType.F32, x.Device);
        using var upper = Where(above, aboveCode, scaled);
        using var codes = Where(below, belowCode, upper);
        using (MemoryContext.Use(MemoryCategory.Activation, "activation_codes"))
            return Cast(codes, DType.U8);   // rounds to nearest
    }

    /// <summary>The F32 values of DoReFa activation codes (see <see cref="ActivationCodes"/>).</summary>
    private static Tensor ActivationValues(Tensor codes, int bits)
    {
        var levels = (1 << bits) - 1;
        using var f = Cast(codes, DType.F32);
        using var top = Tensor.Full(new Shape(), levels, DType.F32, codes.Device);
        using var inside = Le(f, top);
        using var scaled = f.Mul(1.0 / levels);
        using var aboveCode = Tensor.Full(new Shape(), levels + 2, DType.F32, codes.Device);
        using var above = Eq(f, aboveCode);
        using var clipped = Cast(above, DType.F32);
        return Where(inside, scaled, clipped);
    }

    /// <summary>A tensor made by <paramref name="make"/> as Workspace of <paramref name="owner"/>.</summary>
    private static Tensor Workspace(Func<Tensor> make, string owner)
    {
        using (MemoryContext.Use(MemoryCategory.Workspace, owner))
            return make();
    }
}
