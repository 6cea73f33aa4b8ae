using Frugal.Memory;
using Frugal.Nn;

namespace Frugal.Formats;

/// <summary>A stored tensor of a weight: its name suffix ("" for the weight's own name, "_row_ptr", "_u" ...), the
/// tensor, and whether it is trained (a parameter) or only kept (a buffer: indices, scales).</summary>
public readonly record struct WeightPart(string Suffix, Tensor Tensor, bool Trained);

/// <summary>Stride, zero padding and dilation of a square-kernel 2-D convolution.</summary>
public readonly record struct ConvOptions(int Stride = 1, int Padding = 0, int Dilation = 1);

/// <summary>How a weight is initialised from scratch: PyTorch's default U(±1/√fanIn), Kaiming or Xavier uniform,
/// U(±<paramref name="Scale"/>) or N(0, <paramref name="Scale"/>²). A format that stores fewer values than the dense
/// weight draws its stored values from the same distribution (sparse values are the dense weight's on the pattern),
/// or keeps the dense weight's variance (low-rank factors).</summary>
public sealed record WeightInit(InitKind Kind, int FanIn, int FanOut = 0, double Scale = 0)
{
    /// <summary>PyTorch's default for a layer of fan-in <paramref name="fanIn"/>.</summary>
    public static WeightInit Default(int fanIn) => new(InitKind.Default, fanIn);

    /// <summary>N(0, std²) (embeddings).</summary>
    public static WeightInit Normal(double std) => new(InitKind.Normal, 1, Scale: std);

    /// <summary>U(±bound).</summary>
    public static WeightInit Uniform(double bound) => new(InitKind.Uniform, 1, Scale: bound);

    /// <summary>The variance of one value.</summary>
    public double Variance => Kind switch
    {
        InitKind.Normal => Scale * Scale,
        _ => Bound * Bound / 3,
    };

    /// <summary>The uniform distribution's half-width (not for <see cref="InitKind.Normal"/>).</summary>
    public double Bound => Kind switch
    {
        InitKind.Kaiming => Math.Sqrt(6.0 / FanIn),
        InitKind.Xavier => Math.Sqrt(6.0 / (FanIn + FanOut)),
        InitKind.Uniform => Scale,
        InitKind.Normal => throw new InvalidOperationException("a normal initialisation has no bound"),
        _ => 1.0 / Math.Sqrt(FanIn),
    };

    /// <summary>A fresh tensor of <paramref name="shape"/> drawn from this distribution (one seed of
    /// <see cref="Init"/>'s stream).</summary>
    public Tensor Draw(Shape shape, Device? device, DType dtype = DType.F32) => Kind == InitKind.Normal
        ? Tensor.Normal(shape, 0, Scale, Init.NextSeed(), dtype, device)
        : Init.Uniform(shape, Bound, device, dtype);

    /// <summary>Fills <paramref name="values"/> from this distribution with stream <paramref name="seed"/>, counter
    /// <paramref name="offset"/> (chunked initialisation without a whole dense copy).</summary>
    internal void Fill(Tensor values, ulong seed, ulong offset)
    {
        if (Kind == InitKind.Normal)
            values.Backend.Random(values.View, Backends.RandomKind.Normal, 0, Scale, seed, offset);
        else
            values.Backend.Random(values.View, Backends.RandomKind.Uniform, -Bound, Bound, seed, offset);
    }
}

/// <summary>
/// A weight in its format: one instance per layer weight, owning what the format stores (<see cref="Parts"/>: the
/// values, indices, codes, scales or factors, each in its memory category), its traits (logical <see cref="Shape"/>,
/// bytes per category), its products (<see cref="Linear"/>, <see cref="Conv2d"/>, <see cref="Embedding"/>) and a
/// differentiable dense fallback (<see cref="ToDense"/>) that every fast product is tested against, its optimizer
/// rule (attached to its trained parts) and its checkpoint parts. Layers (<see cref="Nn.Linear"/>,
/// <see cref="Nn.Conv2d"/>, <see cref="Nn.Embedding"/>) hold one and name its parts; ops dispatch on it.
/// A format outside the engine derives from this class and from <see cref="WeightFormat"/> (see docs/adding-a-format.md).
/// </summary>
public abstract class Weight : IDisposable
{
    private bool _disposed;

    /// <summary>A weight of logical shape <paramref name="shape"/> ([rows, ...]: [out, in], [out, in, k, k],
    /// [count, dim], or [n] for a vector of stored values).</summary>
    /// <exception cref="ArgumentException">The shape has no values.</exception>
    protected Weight(Shape shape)
    {
        if (shape.Rank < 1 || shape.Numel <= 0)
            throw new ArgumentException($"a weight needs a shape with values, got {shape}");
        Shape = shape;
    }

    /// <summary>The logical shape: what <see cref="ToDense"/> gives and the dense layer's weight would be.</summary>
    public Shape Shape { get; }

    /// <summary>Rows of the weight matrix (output features or channels, embedding entries; 1 for a vector).</summary>
    public int Rows => Shape.Rank == 1 ? 1 : Shape[0];

    /// <summary>Columns of the weight matrix (input features, input channels × kernel area, embedding width).</summary>
    public int Cols => checked((int)(Shape.Numel / Rows));

    /// <summary>The format this weight is in.</summary>
    public abstract WeightFormat Format { get; }

    /// <summary>The profiler's per-format key ("dense", "csr", "q4", "q4-latent", "csr+q4" ...).</summary>
    public virtual string FormatName => Format.Key;

    /// <summary>The dotted name of the weight's own part ("0.weight"); the other parts append their suffix.</summary>
    public string Name { get; private set; } = "weight";

    /// <summary>What the weight stores now (a training method may replace parts: a pattern that grew, a lowered rank).</summary>
    public abstract IEnumerable<WeightPart> Parts { get; }

    /// <summary>The trained parts: what the optimizer updates (their gradients and optimizer state follow the
    /// format's rule: one per stored value, never the dense size).</summary>
    public IEnumerable<Tensor> Parameters => Parts.Where(p => p.Trained).Select(p => p.Tensor);

    /// <summary>Values trained (a master-free weight counts its logical values, not its code bytes).</summary>
    public long ParameterCount => Parameters.Sum(p => p.GradShape.Numel);

    /// <summary>Exact bytes stored per category, summed over the parts' buffers (Parameter for trained values and
    /// codes, FormatMeta for indices and scales). A gradient and each optimizer moment have one entry per trained
    /// value on top.</summary>
    public IReadOnlyDictionary<MemoryCategory, long> StorageBytes()
    {
        var bytes = new Dictionary<MemoryCategory, long>();
        foreach (var p in Parts)
            bytes[p.Tensor.Buffer.Category] = bytes.GetValueOrDefault(p.Tensor.Buffer.Category) + p.Tensor.Buffer.Bytes;
        return bytes;
    }

    /// <summary>The weight as a dense tensor of <see cref="Shape"/>, differentiable into the stored parts: the
    /// reference every fast product is tested against, and the fallback of products a format has no kernel for.</summary>
    public abstract Tensor ToDense();

    /// <summary>W = (I · Wᵀ)ᵀ: the dense weight through a product <paramref name="linear"/>(x) = x · Wᵀ, so its
    /// gradient is the product's own (a Cols × Cols identity: for checks and fallbacks, never in training), on the
    /// device of the weight's parts.</summary>
    protected Tensor DenseThrough(Func<Tensor, Tensor> linear)
    {
        ArgumentNullException.ThrowIfNull(linear);
        var identity = new float[(long)Cols * Cols];
        for (var i = 0; i < Cols; i++)
            identity[(long)i * Cols + i] = 1;
        using var scope = TensorScope.Begin();
        var eye = Tensor.FromArray(identity, new Shape(Cols, Cols), Parts.First().Tensor.Device);
        return linear(eye).Transpose(0, 1).Contiguous().Reshape(Shape.Dims).MoveToOuter();
    }

    /// <summary>y [..., Rows] = x [..., Cols] · Wᵀ (+ bias). Leading dimensions fold into the batch.</summary>
    /// <exception cref="ShapeMismatchException">x does not end in Cols.</exception>
    public virtual Tensor Linear(Tensor x, Tensor? bias)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Rank < 1 || x.Shape[^1] != Cols)
            throw new ShapeMismatchException($"Linear: input {x.Describe()} does not fit a {FormatName} [{Rows}, {Cols}] weight (expects [..., {Cols}])");
        if (x.Rank == 2)
            return LinearMatrix(x, bias);
        using var flat = x.Reshape(-1, Cols);
        using var y = LinearMatrix(flat, bias);
        return y.Reshape([.. x.Shape.Dims[..^1], Rows]);
    }

    /// <summary>y [batch, Rows] = x [batch, Cols] · Wᵀ (+ bias): the format's kernel; by default the dense fallback.</summary>
    protected virtual Tensor LinearMatrix(Tensor x, Tensor? bias)
    {
        using var dense = ToDense();
        using var w = dense.Reshape(Rows, Cols);
        return F.Linear(x, w, bias);
    }

    /// <summary>The convolution of x [N, C, H, W] with this weight [out, C, k, k]; by default the dense fallback.</summary>
    public virtual Tensor Conv2d(Tensor x, Tensor? bias, ConvOptions options)
    {
        if (Shape.Rank != 4)
            throw new ShapeMismatchException($"Conv2d: a {FormatName} weight {Shape} is not [out, in, k, k]");
        using var dense = ToDense();
        return F.Conv2d(x, dense, bias, options.Stride, options.Padding, options.Dilation);
    }

    /// <summary>Rows of this weight [count, dim] picked by I32 <paramref name="indices"/>; by default the dense fallback.</summary>
    public virtual Tensor Embedding(Tensor indices)
    {
        using var dense = ToDense();
        return F.Embedding(indices, dense);
    }

    /// <summary>Checkpoint metadata of the weight (keys start with its name), e.g. a rounding stream.</summary>
    protected internal virtual IEnumerable<KeyValuePair<string, string>> Metadata() => [];

    /// <summary>Throws unless <see cref="Load"/> can load this weight from <paramref name="file"/>. The default wants
    /// every part with its dtype and shape; formats whose sizes change in training validate other sizes.</summary>
    /// <exception cref="ArgumentException">A part is missing or does not fit, naming it.</exception>
    protected internal virtual void Check(IO.SafeTensorsFile file)
    {
        foreach (var p in Parts)
            CheckStored(file, p.Tensor, p.Tensor.Shape);
    }

    /// <summary>Loads the parts checked by <see cref="Check"/>; a format that replaces a trained part tells
    /// <paramref name="optimizer"/>, whose state is loaded afterwards.</summary>
    protected internal virtual void Load(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        foreach (var p in Parts)
            LoadStored(file, p.Tensor);
    }

    /// <summary>Throws unless <paramref name="file"/> holds <paramref name="t"/>'s name with its dtype and
    /// <paramref name="shape"/>.</summary>
    /// <exception cref="ArgumentException">It does not, naming the tensor.</exception>
    protected internal static void CheckStored(IO.SafeTensorsFile file, Tensor t, Shape shape)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(t);
        if (!file.Contains(t.Name!))
            throw new ArgumentException($"the saved state has no '{t.Name}'");
        var e = file.Entry(t.Name!);
        if (e.Shape != shape || e.DType != t.DType)
            throw new ArgumentException($"'{t.Name}' must be {t.DType.Name()} {shape} but the saved state holds {e.DType.Name()} {e.Shape}");
    }

    /// <summary>Copies the stored tensor of <paramref name="t"/>'s name into it.</summary>
    protected internal static void LoadStored(IO.SafeTensorsFile file, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(t);
        using var source = file.ToTensor(t.Name!, t.Device, MemoryCategory.Workspace);
        using (Autograd.NoGrad())
            F.CopyInto(t, source);
    }

    /// <summary>A part made by <paramref name="create"/> directly in its category (Parameter for a trained part,
    /// else <paramref name="category"/>), named after this weight and <paramref name="suffix"/>, out of any tensor
    /// scope (the weight owns it until disposed or replaced).</summary>
    protected Tensor NewPart(string suffix, bool trained, Func<Tensor> create, MemoryCategory category = MemoryCategory.FormatMeta)
    {
        ArgumentNullException.ThrowIfNull(create);
        var name = Name + suffix;
        Tensor t;
        using (MemoryContext.Use(trained ? MemoryCategory.Parameter : category, name))
            t = create();
        t.DetachFromScope();
        t.Name = name;
        if (trained)
        {
            t.RequiresGrad = true;
            t.OfWeight = true;
        }
        return t;
    }

    /// <summary>An inner dense weight (a composition's F32 values or factors) holding the tensor
    /// <paramref name="create"/> makes as a trained part named after this weight and <paramref name="suffix"/>.</summary>
    protected DenseWeight NewDenseWeight(string suffix, Func<Tensor> create)
    {
        var inner = new DenseWeight(NewPart(suffix, true, create));
        inner.Rename(Name + suffix);
        return inner;
    }

    /// <summary>Gives the weight its dotted name (a layer does, when it registers the weight or moves in a model),
    /// renaming every part and its allocator owner.</summary>
    internal void Rename(string name)
    {
        Name = name;
        foreach (var p in Parts)
        {
            p.Tensor.Name = name + p.Suffix;
            p.Tensor.Buffer.Recategorize(p.Tensor.Buffer.Category, p.Tensor.Name);
        }
        OnRenamed();
    }

    /// <summary>Lets inner weights (a composition's stored values) follow a rename.</summary>
    protected virtual void OnRenamed()
    {
    }

    /// <summary>This weight's settings of its format for a layer's description ("rank: 77", "density: 0.100"), or
    /// empty.</summary>
    public virtual string Settings => "";

    /// <summary>The weight for messages.</summary>
    public override string ToString() => $"{FormatName} {Shape}";

    /// <summary>Frees the parts.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the parts (and inner weights).</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var p in Parts)
                p.Tensor.Dispose();
        }
    }
}
