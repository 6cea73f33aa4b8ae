using Frugal.Formats;
using Frugal.Memory;

namespace Frugal.Nn;

/// <summary>
/// A layer whose weight [Rows, Cols] (a convolution's [out, in·k·k]) is in a <see cref="QuantizedFormat"/>, trained
/// in one of two modes (<see cref="QuantMode"/>):
/// <list type="bullet">
/// <item><b>Latent</b>: the parameter "weight" is the F32 latent weight; each forward quantizes it (codes and scales
/// are transients kept for backward) and the straight-through estimator passes the gradient to it.</item>
/// <item><b>Master-free</b>: the parameter "weight" is the packed codes (U8, Parameter) and "weight_scales" the
/// F32 scale and zero per group (FormatMeta): nothing else persists. The gradient is a dense F32 transient, and the
/// optimizer updates the values in F32 and writes them back with stochastic rounding.</item>
/// </list>
/// Both start from PyTorch's default initialisation (quantized to nearest for master-free), and the bias stays F32.
/// </summary>
public abstract class QuantizedLayer : Module
{
    private protected QuantizedLayer(QuantizedFormat format, QuantMode mode, Shape weightShape, bool bias, Device? device)
    {
        ArgumentNullException.ThrowIfNull(format);
        var rows = weightShape[0];
        var cols = checked((int)(weightShape.Numel / rows));
        var group = format.GroupFor(rows, cols);
        (Format, Mode, WeightShape, Rows, Cols) = (format.WithGroup(group == cols ? 0 : group), mode, weightShape, rows, cols);
        Group = group;
        if (mode == QuantMode.Latent)
        {
            Latent = RegisterParameter("weight", () => Init.Default(weightShape, cols, device));
        }
        else
        {
            Scales = RegisterBuffer("weight_scales", MemoryCategory.FormatMeta, () => Tensor.Zeros(new Shape(checked(rows * (cols / group)), 2), DType.F32, device));
            Codes = RegisterParameter("weight", () => Tensor.Zeros(new Shape(checked((int)format.CodeBytes(rows, cols))), DType.U8, device));
            // PyTorch's default U(±1/√in) drawn a chunk of rows at a time (the values Init.Default would give with the
            // same stream) and rounded to nearest: no dense F32 copy of the whole weight exists.
            var (initSeed, bound) = (Init.NextSeed(), 1 / Math.Sqrt(cols));
            var packing = new PackedWeight(new QuantizedWeight(Codes, Scales, Format, rows, cols, group), weightShape, Init.NextSeed());
            using (MemoryContext.Use(MemoryCategory.Workspace, Codes.Name ?? "weight"))
            {
                packing.Initialize(Optim.Optimizer.ChunkValues, Optim.Adam.StateBlock, (values, first) =>
                    values.Backend.Random(values.View, Backends.RandomKind.Uniform, -bound, bound, initSeed, (ulong)first));
            }
            Codes.Packing = packing;
        }
        if (bias)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(rows), cols, device));
    }

    /// <summary>The weight's format (its group resolved for this layer's columns).</summary>
    public QuantizedFormat Format { get; }

    /// <summary>Latent or master-free.</summary>
    public QuantMode Mode { get; }

    /// <summary>Values per scale along a row.</summary>
    public int Group { get; }

    /// <summary>The weight's logical shape ([out, in] or [out, in, k, k]).</summary>
    public Shape WeightShape { get; }

    /// <summary>Rows of the weight matrix (output features or channels).</summary>
    public int Rows { get; }

    /// <summary>Columns of the weight matrix (input features, or input channels × kernel area).</summary>
    public int Cols { get; }

    /// <summary>The latent F32 weight (latent mode), else null.</summary>
    public Tensor? Latent { get; }

    /// <summary>The packed codes (master-free mode), else null.</summary>
    public Tensor? Codes { get; }

    /// <summary>Scale and zero per group (master-free mode), else null.</summary>
    public Tensor? Scales { get; }

    /// <summary>Bias, or null.</summary>
    public Tensor? Bias { get; }

    /// <inheritdoc/>
    public override string WeightFormatName => Mode == QuantMode.Latent ? $"{Format.Name}-latent" : Format.Name;

    /// <summary>The weight as an operand: the stored codes (master-free), or the latent weight quantized with the
    /// straight-through estimator (the caller disposes those transients' handles after use).</summary>
    private protected QuantizedWeight Weight()
        => Mode == QuantMode.Latent ? F.QuantizeSte(Latent!, Format) : new QuantizedWeight(Codes!, Scales!, Format, Rows, Cols, Group);

    /// <summary>Runs <paramref name="body"/> with the weight operand, freeing a latent weight's transient handles.</summary>
    private protected Tensor WithWeight(Func<QuantizedWeight, Tensor> body)
    {
        var w = Weight();
        try
        {
            return body(w);
        }
        finally
        {
            if (Mode == QuantMode.Latent)
                w.DisposeParts();
        }
    }

    /// <summary>The metadata key of a master-free weight's rounding stream ("seed,draws").</summary>
    private string StreamKey => $"{Codes!.Name}.rounding_stream";

    /// <inheritdoc/>
    protected internal override IEnumerable<KeyValuePair<string, string>> OwnMetadata()
    {
        if (Codes?.Packing is { } packing)
            yield return new(StreamKey, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{packing.Stream.Seed},{packing.Stream.Draws}"));
    }

    /// <inheritdoc/>
    protected internal override void CheckOwn(IO.SafeTensorsFile file)
    {
        base.CheckOwn(file);
        if (Mode == QuantMode.MasterFree)
            StoredStream(file);
    }

    /// <inheritdoc/>
    protected internal override void LoadOwn(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        base.LoadOwn(file, optimizer);
        if (Codes?.Packing is { } packing)
            packing.Stream = StoredStream(file);
    }

    private (ulong Seed, ulong Draws) StoredStream(IO.SafeTensorsFile file)
    {
        var parts = file.Metadata.GetValueOrDefault(StreamKey)?.Split(',');
        if (parts is not [var seed, var draws]
            || !ulong.TryParse(seed, System.Globalization.CultureInfo.InvariantCulture, out var s)
            || !ulong.TryParse(draws, System.Globalization.CultureInfo.InvariantCulture, out var d))
            throw new ArgumentException($"the checkpoint has no valid '{StreamKey}' (\"seed,draws\" of the master-free weight's stochastic rounding)");
        return (s, d);
    }

    /// <summary>Bytes this layer stores per category: master-free, the codes (and the bias) as Parameter and the
    /// scales as FormatMeta (the format's formula, <see cref="TensorFormat.StorageBytes"/>); latent, the F32 latent
    /// weight and bias as Parameter (the codes are per-step transients).</summary>
    public IReadOnlyDictionary<MemoryCategory, long> StorageBytes()
    {
        var bias = 4L * (Bias?.Numel ?? 0);
        if (Mode == QuantMode.Latent)
            return new Dictionary<MemoryCategory, long> { [MemoryCategory.Parameter] = 4L * Rows * Cols + bias };
        var bytes = new Dictionary<MemoryCategory, long>(Format.StorageBytes(Rows, Cols, (long)Rows * Cols, DType.F32));
        bytes[MemoryCategory.Parameter] += bias;
        return bytes;
    }

    /// <summary>The weight the forward uses, dequantized to a dense tensor of <see cref="WeightShape"/> (for checks and
    /// export; never used in training).</summary>
    public Tensor DenseWeight()
    {
        using (Autograd.Autograd.NoGrad())
            return WithWeight(w => F.Dequantize(w, WeightShape));
    }
}

/// <summary>A linear layer y = x·Wᵀ + b with a quantized weight [out, in] (see <see cref="QuantizedLayer"/>); the
/// product dequantizes inside the kernel. With <see cref="ActivationBits"/> k &gt; 0 its input is quantized to k bits
/// (DoReFa) and only the 1-byte codes are kept for backward.</summary>
public sealed class QuantizedLinear : QuantizedLayer
{
    /// <summary>A layer of <paramref name="format"/> trained in <paramref name="mode"/>.</summary>
    /// <exception cref="ArgumentException">The format's group does not divide <paramref name="inFeatures"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Activation bits outside 0..7.</exception>
    public QuantizedLinear(int inFeatures, int outFeatures, QuantizedFormat format, QuantMode mode = QuantMode.MasterFree, bool bias = true, int activationBits = 0, Device? device = null)
        : base(format, mode, CheckedShape(inFeatures, outFeatures, activationBits), bias, device)
        => ActivationBits = activationBits;

    /// <summary>[out, in], once the arguments are checked (before anything is allocated).</summary>
    private static Shape CheckedShape(int inFeatures, int outFeatures, int activationBits) => activationBits is < 0 or > 7
        ? throw new ArgumentOutOfRangeException(nameof(activationBits), $"QuantizedLinear: activation bits must be 1..7 (0: not quantized), got {activationBits}")
        : new Shape(outFeatures, inFeatures);

    /// <summary>Bits of the quantized input (0: F32 input).</summary>
    public int ActivationBits { get; }

    /// <summary>Input width.</summary>
    public int InFeatures => Cols;

    /// <summary>Output width.</summary>
    public int OutFeatures => Rows;

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => WithWeight(w =>
    {
        if (x.Rank == 2)
            return F.QuantizedLinear(x, w, Bias, ActivationBits);
        using var flat = x.Reshape(-1, x.Shape[^1]);
        using var y = F.QuantizedLinear(flat, w, Bias, ActivationBits);
        return y.Reshape([.. x.Shape.Dims[..^1], Rows]);
    });

    /// <inheritdoc/>
    public override string ToString() => $"QuantizedLinear({Cols}, {Rows}, {Format}, {Mode}{(ActivationBits > 0 ? $", activations: {ActivationBits} bits" : "")})";
}

/// <summary>A 2-D convolution with a quantized weight [out, in, k, k] (see <see cref="QuantizedLayer"/>): the weight
/// is dequantized for the dense convolution kernels (a transient the convolution keeps for its backward; a CNN's
/// kernels are small beside its activations), and its gradient passes to the codes or the latent weight.</summary>
public sealed class QuantizedConv2d : QuantizedLayer
{
    /// <summary>A square-kernel convolution of <paramref name="format"/> trained in <paramref name="mode"/>.</summary>
    /// <exception cref="ArgumentException">The format's group does not divide in·k·k.</exception>
    public QuantizedConv2d(int inChannels, int outChannels, int kernel, QuantizedFormat format, QuantMode mode = QuantMode.MasterFree,
        int stride = 1, int padding = 0, int dilation = 1, bool bias = true, Device? device = null)
        : base(format, mode, new Shape(outChannels, inChannels, kernel, kernel), bias, device)
        => (Stride, Padding, Dilation) = (stride, padding, dilation);

    /// <summary>Stride.</summary>
    public int Stride { get; }

    /// <summary>Zero padding on each side.</summary>
    public int Padding { get; }

    /// <summary>Dilation.</summary>
    public int Dilation { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => WithWeight(w =>
    {
        using var dense = F.Dequantize(w, WeightShape);
        return F.Conv2d(x, dense, Bias, Stride, Padding, Dilation);
    });

    /// <inheritdoc/>
    public override string ToString() => $"QuantizedConv2d({WeightShape[1]}, {Rows}, {WeightShape[2]}, {Format}, {Mode})";
}
