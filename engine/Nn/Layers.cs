using Frugal.Formats;
using Frugal.Memory;

namespace Frugal.Nn;

/// <summary>How a layer initialises its weight.</summary>
public enum InitKind
{
    /// <summary>PyTorch's default: U(±1/√fanIn) (kaiming_uniform with a = √5).</summary>
    Default,
    /// <summary>Kaiming uniform, gain √2 (ReLU).</summary>
    Kaiming,
    /// <summary>Xavier uniform.</summary>
    Xavier,
    /// <summary>U(±scale) (<see cref="Formats.WeightInit.Uniform"/>).</summary>
    Uniform,
    /// <summary>N(0, scale²) (<see cref="Formats.WeightInit.Normal"/>).</summary>
    Normal,
}

/// <summary>y = x·Wᵀ + b with a weight [out, in] in any format (<see cref="WeightFormat"/>: dense by default, sparse,
/// quantized, low-rank, compositions, registered formats). The weight is a <see cref="Formats.Weight"/> whose parts
/// are this layer's parameters ("weight", "weight_row_ptr", "weight_u" ...); the bias stays dense.</summary>
public sealed class Linear : Module
{
    /// <summary>A linear layer in <paramref name="format"/> with a seeded initialisation (see <see cref="Init"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    /// <exception cref="ArgumentException">The weight does not fit the format (blocks, rank, group), or the dtype.</exception>
    public Linear(int inFeatures, int outFeatures, WeightFormat? format = null, bool bias = true, InitKind init = InitKind.Default, Device? device = null, DType dtype = DType.F32)
    {
        if (inFeatures <= 0 || outFeatures <= 0)
            throw new ArgumentOutOfRangeException(nameof(inFeatures), $"Linear: sizes must be positive, got {inFeatures} -> {outFeatures}");
        Weight = RegisterWeight("weight", (format ?? WeightFormat.Dense).Create(new Shape(outFeatures, inFeatures), new WeightInit(init, inFeatures, outFeatures), device, dtype));
        if (bias)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(outFeatures), inFeatures, device, dtype));
    }

    /// <summary>A linear layer with a weight made elsewhere (e.g. the sparse weight SNIP chose) and, optionally, a
    /// bias [out]; the layer owns both from now on.</summary>
    /// <exception cref="ArgumentException">The weight is not a matrix, or the bias does not fit it.</exception>
    public Linear(Weight weight, Tensor? bias)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Shape.Rank != 2 || bias is not null && bias.Shape != new Shape(weight.Rows))
            throw new ArgumentException($"Linear: a {weight} weight with bias {bias?.Describe() ?? "none"} is not [out, in] with a bias [out]");
        Weight = RegisterWeight("weight", weight);
        if (bias is not null)
            Bias = RegisterParameter("bias", bias);
    }

    /// <summary>Input width.</summary>
    public int InFeatures => Weight.Cols;

    /// <summary>Output width.</summary>
    public int OutFeatures => Weight.Rows;

    /// <summary>Weight [out, in] in its format.</summary>
    public Weight Weight { get; }

    /// <summary>Bias [out], or null.</summary>
    public Tensor? Bias { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.Linear(x, Weight, Bias);

    /// <inheritdoc/>
    public override string ToString() => $"Linear({InFeatures}, {OutFeatures}, {Describe(Weight)}bias: {Bias is not null})";

    /// <summary>"format, settings, " of a weight that is not dense, for a layer's description.</summary>
    internal static string Describe(Weight weight) => weight is DenseWeight
        ? ""
        : weight.Settings.Length == 0 ? $"{weight.FormatName}, " : $"{weight.FormatName}, {weight.Settings}, ";
}

/// <summary>2-D convolution over NCHW input with a weight [out, in, k, k] in any format (its matrix [out, in·k·k] for
/// the sparse and quantized ones, U·Vᵀ of a convolution into r channels and a 1×1 one for low rank).</summary>
public sealed class Conv2d : Module
{
    /// <summary>A square-kernel convolution in <paramref name="format"/> with PyTorch's default initialisation.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    /// <exception cref="ArgumentException">The weight does not fit the format, or the dtype.</exception>
    public Conv2d(int inChannels, int outChannels, int kernel, int stride = 1, int padding = 0, int dilation = 1, bool bias = true, InitKind init = InitKind.Default, Device? device = null, DType dtype = DType.F32, WeightFormat? format = null)
    {
        if (inChannels <= 0 || outChannels <= 0 || kernel <= 0)
            throw new ArgumentOutOfRangeException(nameof(kernel), $"Conv2d: channels and kernel must be positive, got {inChannels} -> {outChannels}, kernel {kernel}");
        Options = new ConvOptions(stride, padding, dilation);
        var fanIn = inChannels * kernel * kernel;
        Weight = RegisterWeight("weight", (format ?? WeightFormat.Dense).Create(new Shape(outChannels, inChannels, kernel, kernel), new WeightInit(init, fanIn, outChannels * kernel * kernel), device, dtype));
        if (bias)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(outChannels), fanIn, device, dtype));
    }

    /// <summary>A convolution with a weight [out, in, k, k] made elsewhere and, optionally, a bias [out]; the layer
    /// owns both from now on.</summary>
    /// <exception cref="ArgumentException">The weight is not [out, in, k, k], or the bias does not fit it.</exception>
    public Conv2d(Weight weight, Tensor? bias, ConvOptions options)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.Shape.Rank != 4 || bias is not null && bias.Shape != new Shape(weight.Rows))
            throw new ArgumentException($"Conv2d: a {weight} weight with bias {bias?.Describe() ?? "none"} is not [out, in, k, k] with a bias [out]");
        Options = options;
        Weight = RegisterWeight("weight", weight);
        if (bias is not null)
            Bias = RegisterParameter("bias", bias);
    }

    /// <summary>Weight [out, in, k, k] in its format.</summary>
    public Weight Weight { get; }

    /// <summary>Bias [out], or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>Stride, padding and dilation.</summary>
    public ConvOptions Options { get; }

    /// <summary>Stride.</summary>
    public int Stride => Options.Stride;

    /// <summary>Zero padding on each side.</summary>
    public int Padding => Options.Padding;

    /// <summary>Dilation.</summary>
    public int Dilation => Options.Dilation;

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.Conv2d(x, Weight, Bias, Options);

    /// <inheritdoc/>
    public override string ToString() => $"Conv2d({Weight.Shape[1]}, {Weight.Shape[0]}, kernel: {Weight.Shape[2]}, {Linear.Describe(Weight)}stride: {Stride}, padding: {Padding})";
}

/// <summary>Max pooling.</summary>
public sealed class MaxPool2d(int kernel, int? stride = null, int padding = 0) : Module
{
    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.MaxPool2d(x, kernel, stride, padding);
}

/// <summary>Average pooling.</summary>
public sealed class AvgPool2d(int kernel, int? stride = null, int padding = 0) : Module
{
    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.AvgPool2d(x, kernel, stride, padding);
}

/// <summary>Flattens all dims from <c>startDim</c> (default 1: keeps the batch).</summary>
public sealed class Flatten(int startDim = 1, int endDim = -1) : Module
{
    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.Flatten(x, startDim, endDim);
}

/// <summary>max(x, 0).</summary>
public sealed class ReLU : Module
{
    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => x.Relu();
}

/// <summary>GELU (tanh approximation).</summary>
public sealed class GELU : Module
{
    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => x.Gelu();
}

/// <summary>tanh.</summary>
public sealed class Tanh : Module
{
    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => x.Tanh();
}

/// <summary>Dropout with probability p in training mode; identity in eval mode.</summary>
public sealed class Dropout : Module
{
    /// <summary>Zeroes elements with probability <paramref name="p"/>.</summary>
    public Dropout(double p = 0.5)
    {
        if (p is < 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(p), $"Dropout: p must be in [0, 1), got {p}");
        P = p;
    }

    /// <summary>Drop probability.</summary>
    public double P { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.Dropout(x, P, Training);
}

/// <summary>Layer normalisation over the last dimension with learned gamma (ones) and beta (zeros).</summary>
public sealed class LayerNorm : Module
{
    /// <summary>Normalises the last dimension of size <paramref name="features"/>.</summary>
    public LayerNorm(int features, double eps = 1e-5, Device? device = null, DType dtype = DType.F32)
    {
        Eps = eps;
        Gamma = RegisterParameter("weight", () => Tensor.Ones(new Shape(features), dtype, device));
        Beta = RegisterParameter("bias", () => Tensor.Zeros(new Shape(features), dtype, device));
    }

    /// <summary>Scale [features].</summary>
    public Tensor Gamma { get; }

    /// <summary>Shift [features].</summary>
    public Tensor Beta { get; }

    /// <summary>Variance epsilon.</summary>
    public double Eps { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.LayerNorm(x, Gamma, Beta, Eps);
}

/// <summary>Batch normalisation (Ioffe and Szegedy; PyTorch's BatchNorm1d and BatchNorm2d in one) over the channel
/// dimension 1 of [N, C] or [N, C, H, W] inputs: in training mode each channel is normalised by its batch mean and
/// biased variance, and the running mean and unbiased variance move by <see cref="Momentum"/>; in eval mode the running
/// statistics normalise. The running statistics are buffers (in <see cref="Module.StateDict"/> and checkpoints, bytes
/// of category Other), the scale and shift parameters.</summary>
public sealed class BatchNorm : Module
{
    /// <summary>Normalises <paramref name="features"/> channels.</summary>
    public BatchNorm(int features, double eps = 1e-5, double momentum = 0.1, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(features, 1);
        if (!(momentum >= 0 && momentum <= 1))
            throw new ArgumentOutOfRangeException(nameof(momentum), $"BatchNorm: momentum {momentum} is outside [0, 1]");
        (Features, Eps, Momentum) = (features, eps, momentum);
        Gamma = RegisterParameter("weight", () => Tensor.Ones(new Shape(features), dtype, device));
        Beta = RegisterParameter("bias", () => Tensor.Zeros(new Shape(features), dtype, device));
        RunningMean = RegisterBuffer("running_mean", MemoryCategory.Other, () => Tensor.Zeros(new Shape(features), dtype, device));
        RunningVar = RegisterBuffer("running_var", MemoryCategory.Other, () => Tensor.Ones(new Shape(features), dtype, device));
    }

    /// <summary>Channels.</summary>
    public int Features { get; }

    /// <summary>Variance epsilon.</summary>
    public double Eps { get; }

    /// <summary>Weight of the newest batch in the running statistics.</summary>
    public double Momentum { get; }

    /// <summary>Scale [features].</summary>
    public Tensor Gamma { get; }

    /// <summary>Shift [features].</summary>
    public Tensor Beta { get; }

    /// <summary>Running mean [features].</summary>
    public Tensor RunningMean { get; }

    /// <summary>Running unbiased variance [features].</summary>
    public Tensor RunningVar { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        if ((x.Rank != 2 && x.Rank != 4) || x.Shape[1] != Features)
            throw new ShapeMismatchException($"BatchNorm: expects [N, {Features}] or [N, {Features}, H, W], got {x.Describe()}");
        int[] dims = x.Rank == 2 ? [0] : [0, 2, 3];
        int[] channel = x.Rank == 2 ? [1, Features] : [1, Features, 1, 1];
        var count = x.Numel / Features;
        using var gamma = Gamma.Reshape(channel);
        using var beta = Beta.Reshape(channel);
        Tensor mean, variance;
        if (Training)
        {
            if (count < 2)
                throw new ArgumentException($"BatchNorm: training needs more than one value per channel, got {x.Describe()}");
            mean = F.Mean(x, dims, keepDim: true);
            using var centred0 = x - mean;
            using var squares = centred0 * centred0;
            variance = F.Mean(squares, dims, keepDim: true);
            using (Autograd.NoGrad())
            {
                Update(RunningMean, mean, 1);
                Update(RunningVar, variance, count / (double)(count - 1));
            }
        }
        else
        {
            mean = RunningMean.Reshape(channel);
            variance = RunningVar.Reshape(channel);
        }
        using (mean)
        using (variance)
        {
            using var centred = x - mean;
            using var shifted = variance + Eps;
            using var root = shifted.Sqrt();
            using var normalised = centred / root;
            using var scaled = normalised * gamma;
            return scaled + beta;
        }
    }

    /// <summary>running ← (1 − momentum)·running + momentum·factor·batch.</summary>
    private void Update(Tensor running, Tensor batch, double factor)
    {
        using var flat = batch.Reshape(Features);
        using var newest = flat.Mul(Momentum * factor);
        using var kept = running.Mul(1 - Momentum);
        using var next = kept + newest;
        F.CopyInto(running, next);
    }
}

/// <summary>A lookup table [count, dim] indexed by I32 tokens, in any format (ALBERT's factorized table for low rank;
/// formats without a lookup kernel use their dense fallback); initialised N(0, std²) (PyTorch: N(0, 1)).</summary>
public sealed class Embedding : Module
{
    /// <summary>A table of <paramref name="count"/> vectors of width <paramref name="dim"/>, entries N(0, std²)
    /// (for low rank, the product's entries).</summary>
    public Embedding(int count, int dim, Device? device = null, DType dtype = DType.F32, double std = 1, WeightFormat? format = null)
        => Weight = RegisterWeight("weight", (format ?? WeightFormat.Dense).Create(new Shape(count, dim), WeightInit.Normal(std), device, dtype));

    /// <summary>Table [count, dim] in its format.</summary>
    public Weight Weight { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.Embedding(x, Weight);
}

/// <summary>Applies modules in order; children are named "0", "1", ... as in PyTorch.</summary>
public sealed class Sequential : Module
{
    private readonly Module[] _layers;

    /// <summary>A pipeline of <paramref name="layers"/>.</summary>
    public Sequential(params Module[] layers)
    {
        _layers = layers;
        for (var i = 0; i < layers.Length; i++)
            RegisterModule(i.ToString(System.Globalization.CultureInfo.InvariantCulture), layers[i]);
    }

    /// <summary>The layers.</summary>
    public IReadOnlyList<Module> Layers => _layers;

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        // Intermediate results are disposed as soon as the next layer has consumed them; autograd keeps what it saved.
        var h = _layers.Length == 0 ? F.Contiguous(x) : _layers[0].Forward(x);
        for (var i = 1; i < _layers.Length; i++)
        {
            var next = _layers[i].Forward(h);
            h.Dispose();
            h = next;
        }
        return h;
    }

    /// <inheritdoc/>
    public override string ToString() => "Sequential(" + string.Join(", ", _layers.Select(l => l.ToString())) + ")";
}
