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
}

/// <summary>y = x·Wᵀ + b, W [out, in].</summary>
public sealed class Linear : Module
{
    /// <summary>A linear layer with a seeded initialisation (see <see cref="Init"/>).</summary>
    public Linear(int inFeatures, int outFeatures, bool bias = true, InitKind init = InitKind.Default, Device? device = null, DType dtype = DType.F32)
    {
        if (inFeatures <= 0 || outFeatures <= 0)
            throw new ArgumentOutOfRangeException(nameof(inFeatures), $"Linear: sizes must be positive, got {inFeatures} -> {outFeatures}");
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        var shape = new Shape(outFeatures, inFeatures);
        Weight = RegisterParameter("weight", () => init switch
        {
            InitKind.Kaiming => Init.KaimingUniform(shape, inFeatures, device, dtype),
            InitKind.Xavier => Init.XavierUniform(shape, inFeatures, outFeatures, device, dtype),
            _ => Init.Default(shape, inFeatures, device, dtype),
        });
        if (bias)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(outFeatures), inFeatures, device, dtype));
    }

    /// <summary>Input width.</summary>
    public int InFeatures { get; }

    /// <summary>Output width.</summary>
    public int OutFeatures { get; }

    /// <summary>Weight [out, in].</summary>
    public Tensor Weight { get; }

    /// <summary>Bias [out], or null.</summary>
    public Tensor? Bias { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.Linear(x, Weight, Bias);

    /// <inheritdoc/>
    public override string ToString() => $"Linear({InFeatures}, {OutFeatures}, bias: {Bias is not null})";
}

/// <summary>2-D convolution over NCHW input, weight [out, in, k, k].</summary>
public sealed class Conv2d : Module
{
    /// <summary>A square-kernel convolution with PyTorch's default initialisation.</summary>
    public Conv2d(int inChannels, int outChannels, int kernel, int stride = 1, int padding = 0, int dilation = 1, bool bias = true, InitKind init = InitKind.Default, Device? device = null, DType dtype = DType.F32)
    {
        if (inChannels <= 0 || outChannels <= 0 || kernel <= 0)
            throw new ArgumentOutOfRangeException(nameof(kernel), $"Conv2d: channels and kernel must be positive, got {inChannels} -> {outChannels}, kernel {kernel}");
        (Stride, Padding, Dilation) = (stride, padding, dilation);
        var fanIn = inChannels * kernel * kernel;
        var shape = new Shape(outChannels, inChannels, kernel, kernel);
        Weight = RegisterParameter("weight", () => init switch
        {
            InitKind.Kaiming => Init.KaimingUniform(shape, fanIn, device, dtype),
            InitKind.Xavier => Init.XavierUniform(shape, fanIn, outChannels * kernel * kernel, device, dtype),
            _ => Init.Default(shape, fanIn, device, dtype),
        });
        if (bias)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(outChannels), fanIn, device, dtype));
    }

    /// <summary>Weight [out, in, k, k].</summary>
    public Tensor Weight { get; }

    /// <summary>Bias [out], or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>Stride.</summary>
    public int Stride { get; }

    /// <summary>Zero padding on each side.</summary>
    public int Padding { get; }

    /// <summary>Dilation.</summary>
    public int Dilation { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.Conv2d(x, Weight, Bias, Stride, Padding, Dilation);

    /// <inheritdoc/>
    public override string ToString() => $"Conv2d({Weight.Shape[1]}, {Weight.Shape[0]}, kernel: {Weight.Shape[2]}, stride: {Stride}, padding: {Padding})";
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

/// <summary>A lookup table [vocab, dim] indexed by I32 tokens; initialised N(0, 1) as PyTorch (or N(0, std²)).</summary>
public sealed class Embedding : Module
{
    /// <summary>A table of <paramref name="count"/> vectors of width <paramref name="dim"/>, entries N(0, std²).</summary>
    public Embedding(int count, int dim, Device? device = null, DType dtype = DType.F32, double std = 1)
        => Weight = RegisterParameter("weight", () => Tensor.Normal(new Shape(count, dim), 0, std, Init.NextSeed(), dtype, device));

    /// <summary>Table [count, dim].</summary>
    public Tensor Weight { get; }

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
