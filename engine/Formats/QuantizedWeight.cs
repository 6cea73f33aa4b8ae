using System.Globalization;
using Frugal.Memory;

namespace Frugal.Formats;

/// <summary>The quantized formats' settings: the code layout (<see cref="Layout"/>: bits, group, scheme), the training
/// mode, DoReFa input quantization of linear layers, and whether the group was left to each weight.</summary>
public sealed record QuantizedWeightFormat : WeightFormat
{
    private QuantizedWeightFormat(QuantizedFormat layout, QuantMode mode, int activationBits, bool autoGroup)
        => (Layout, Mode, ActivationBits, AutoGroup) = (layout, mode, activationBits, autoGroup);

    /// <summary>Default group of quantized weights: 64 values per scale where 64 divides a weight's columns.</summary>
    public const int DefaultGroup = 64;

    /// <summary>Bits, group and scheme of the codes.</summary>
    public QuantizedFormat Layout { get; }

    /// <summary>How the weight trains.</summary>
    public QuantMode Mode { get; }

    /// <summary>Bits of DoReFa input quantization of linear layers (0: F32 inputs).</summary>
    public int ActivationBits { get; private init; }

    /// <summary>The group was left to each weight (64 where it divides the columns, else one group per row).</summary>
    public bool AutoGroup { get; }

    internal static QuantizedWeightFormat Create(int bits, int? group, QuantScheme? scheme, QuantMode mode, int activationBits)
    {
        if (activationBits is < 0 or > 7)
            throw new ArgumentOutOfRangeException(nameof(activationBits), $"quantized: activation bits must be 1..7 (0: not quantized), got {activationBits}");
        return new(QuantizedFormat.Create(bits, group ?? 0, scheme), mode, activationBits, group is null);
    }

    /// <summary>This format with linear layers quantizing their inputs to <paramref name="bits"/> (0: F32 inputs).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Bits outside 0..7.</exception>
    public QuantizedWeightFormat WithActivationBits(int bits) => bits == ActivationBits
        ? this
        : bits is >= 0 and <= 7
            ? this with { ActivationBits = bits }
            : throw new ArgumentOutOfRangeException(nameof(bits), $"quantized: activation bits must be 1..7 (0: not quantized), got {bits}");

    /// <summary><paramref name="values"/> as the format of a structured weight's stored values (a composition):
    /// a quantized format without input quantization.</summary>
    /// <exception cref="NotSupportedException">Another format, or one with input quantization, naming both.</exception>
    internal static QuantizedWeightFormat ForStoredValues(string structure, WeightFormat values) => values switch
    {
        QuantizedWeightFormat { ActivationBits: 0 } q => q,
        QuantizedWeightFormat q => throw new NotSupportedException($"{structure}: stored values are quantized without input quantization (drop :a{q.ActivationBits} from {q})"),
        _ => throw new NotSupportedException($"{structure}: stored values can be quantized (q8, q4, q2, q1), not {values}"),
    };

    /// <inheritdoc/>
    public override string Key => Mode == QuantMode.Latent ? $"{Layout.Name}-latent" : Layout.Name;

    /// <summary>The code layout a [rows, cols] weight gets (its group resolved).</summary>
    internal QuantizedFormat LayoutFor(int cols) => AutoGroup && cols % DefaultGroup == 0 ? Layout.WithGroup(DefaultGroup) : Layout;

    /// <inheritdoc/>
    public override bool Fits(Shape shape) => shape.Rank < 2 || AutoGroup || Layout.Group == 0 || shape.Numel / shape[0] % Layout.Group == 0;

    /// <inheritdoc/>
    public override Weight Create(Shape shape, WeightInit init, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(init);
        if (dtype != DType.F32)
            throw new ArgumentException($"{this}: quantized weights are trained from f32, not {dtype.Name()}");
        return new QuantizedWeight(this, shape, init, device);
    }

    internal static QuantizedWeightFormat Parse(string text, string[] parts)
    {
        var bits = parts[0][1] - '0';
        int? group = null;
        QuantScheme? scheme = null;
        var (mode, activationBits) = (QuantMode.MasterFree, 0);
        foreach (var part in parts.Skip(1))
        {
            if (int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var g) && g > 0)
                group = g;
            else if (part is "row" or "auto")
                group = part == "row" ? 0 : null;
            else if (part is "latent" or "masterfree")
                mode = part == "latent" ? QuantMode.Latent : QuantMode.MasterFree;
            else if (Enum.TryParse<QuantScheme>(part, ignoreCase: true, out var s) && part.All(char.IsLower))
                scheme = s;
            else if (part.Length == 2 && part[0] == 'a' && part[1] is >= '1' and <= '7')
                activationBits = part[1] - '0';
            else
                throw new FormatException($"weight format '{text}': '{part}' is not a group (a positive integer or 'row'), a mode (latent, masterfree), a scheme (symmetric, asymmetric, ternary, binary) or activation bits (a1 .. a7)");
        }
        try
        {
            return Create(bits, group, scheme, mode, activationBits);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new FormatException($"weight format '{text}': {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"q{Layout.Bits}:{(AutoGroup ? "auto" : Layout.Group == 0 ? "row" : Layout.Group.ToString(CultureInfo.InvariantCulture))}:{(Mode == QuantMode.Latent ? "latent" : "masterfree")}"
        + $"{(Layout.Scheme == QuantizedFormat.DefaultScheme(Layout.Bits) ? "" : ":" + Layout.Scheme.ToString().ToLowerInvariant())}{(ActivationBits > 0 ? $":a{ActivationBits}" : "")}";
}

/// <summary>
/// A weight in a <see cref="QuantizedFormat"/>, trained in one of two modes (<see cref="QuantMode"/>):
/// <list type="bullet">
/// <item><b>Latent</b>: the trained part is the F32 latent weight; each product quantizes it (codes and scales are
/// transients kept for backward) and the straight-through estimator passes the gradient to it.</item>
/// <item><b>Master-free</b>: the trained part is the packed codes (U8, Parameter) and "_scales" the F32 scale and zero
/// per group (FormatMeta): nothing else persists. The gradient is a dense F32 transient, and the optimizer updates the
/// values in F32 a chunk at a time and writes them back with stochastic rounding (the rule attached to the codes).</item>
/// </list>
/// A matrix [rows, ...] is quantized in groups along each row. A vector [n] (a composition's stored values: a sparse
/// weight's values) is stored as [⌈n / G⌉, G] rows of one group each, the last padded with fewer than G zeros.
/// Both modes start from the given initialisation (rounded to nearest for master-free, drawn a chunk of rows at a time
/// so that no dense F32 copy of the whole weight exists).
/// </summary>
public sealed class QuantizedWeight : Weight
{
    internal QuantizedWeight(QuantizedWeightFormat format, Shape shape, WeightInit init, Device? device)
        : base(shape)
    {
        Spec = format;
        if (shape.Rank == 1)
        {
            // A vector: rows of one group each (64 values unless a group was given).
            var group = format.AutoGroup || format.Layout.Group == 0 ? QuantizedWeightFormat.DefaultGroup : format.Layout.Group;
            (StoredRows, StoredCols, Group) = (checked((int)((shape.Numel + group - 1) / group)), group, group);
            Layout = format.Layout.WithGroup(0);
        }
        else
        {
            var layout = format.LayoutFor(Cols);
            (StoredRows, StoredCols) = (Rows, Cols);
            Group = layout.GroupFor(Rows, Cols);
            Layout = layout.WithGroup(Group == Cols ? 0 : Group);
        }
        var stored = new Shape(StoredRows, StoredCols);
        if (format.Mode == QuantMode.Latent)
        {
            Latent = NewPart("", true, () => init.Draw(shape.Rank == 1 ? stored : shape, device));
            return;
        }
        Scales = NewPart("_scales", false, () => Tensor.Zeros(new Shape(checked((int)((long)StoredRows * StoredCols / Group)), 2), DType.F32, device));
        Codes = NewPart("", true, () => Tensor.Zeros(new Shape(checked((int)Layout.CodeBytes(StoredRows, StoredCols))), DType.U8, device));
        var initSeed = Nn.Init.NextSeed();
        var packing = new PackedWeight(new QuantizedOperand(Codes, Scales, Layout, StoredRows, StoredCols, Group), shape.Rank == 1 ? stored : shape, Nn.Init.NextSeed());
        var logical = shape.Numel;
        using (MemoryContext.Use(MemoryCategory.Workspace, Name))
        {
            packing.Initialize(Optim.Optimizer.ChunkValues, Optim.Adam.StateBlock, (values, first) =>
            {
                init.Fill(values, initSeed, (ulong)first);
                // The padding of a vector stays zero.
                if (first + values.Numel > logical)
                {
                    using var flat = values.Reshape(-1);
                    var from = (int)Math.Max(0, logical - first);
                    using var tail = flat.Narrow(0, from, (int)(values.Numel - from));
                    using var zero = Tensor.Zeros(tail.Shape, DType.F32, values.Device);
                    F.CopyInto(tail, zero);
                }
            });
        }
        Codes.Packing = packing;
    }

    /// <summary>The format (mode, activation bits).</summary>
    public QuantizedWeightFormat Spec { get; }

    /// <summary>Bits, scheme and the group of this weight (0 when one group per row).</summary>
    public QuantizedFormat Layout { get; }

    /// <inheritdoc/>
    public override WeightFormat Format => Spec;

    /// <summary>Latent or master-free.</summary>
    public QuantMode Mode => Spec.Mode;

    /// <summary>Values per scale along a stored row.</summary>
    public int Group { get; }

    /// <summary>Rows of the stored code matrix (the weight's rows; ⌈n / G⌉ for a vector).</summary>
    public int StoredRows { get; }

    /// <summary>Columns of the stored code matrix (the weight's columns; G for a vector).</summary>
    public int StoredCols { get; }

    /// <summary>The latent F32 weight (latent mode), else null.</summary>
    public Tensor? Latent { get; }

    /// <summary>The packed codes (master-free mode), else null.</summary>
    public Tensor? Codes { get; }

    /// <summary>Scale and zero per group (master-free mode), else null.</summary>
    public Tensor? Scales { get; }

    /// <inheritdoc/>
    public override IEnumerable<WeightPart> Parts => Mode == QuantMode.Latent
        ? [new("", Latent!, true)]
        : [new("", Codes!, true), new("_scales", Scales!, false)];

    /// <summary>Runs <paramref name="body"/> with the weight as an operand: the stored codes (master-free), or the
    /// latent weight quantized with the straight-through estimator (those transients freed after use).</summary>
    private Tensor WithOperand(Func<QuantizedOperand, Tensor> body)
    {
        if (Mode == QuantMode.MasterFree)
            return body(new QuantizedOperand(Codes!, Scales!, Layout, StoredRows, StoredCols, Group));
        var w = F.QuantizeSte(Latent!, Layout);
        try
        {
            return body(w);
        }
        finally
        {
            w.DisposeParts();
        }
    }

    /// <inheritdoc/>
    protected override Tensor LinearMatrix(Tensor x, Tensor? bias) => WithOperand(w => F.QuantizedLinear(x, w, bias, Spec.ActivationBits));

    /// <inheritdoc/>
    /// <remarks>The weight is dequantized for the dense convolution kernels (a transient the convolution keeps for its
    /// backward; a CNN's kernels are small beside its activations), and its gradient passes to the codes or the
    /// latent weight.</remarks>
    public override Tensor Conv2d(Tensor x, Tensor? bias, ConvOptions options) => WithOperand(w =>
    {
        using var dense = F.Dequantize(w, Shape);
        return F.Conv2d(x, dense, bias, options.Stride, options.Padding, options.Dilation);
    });

    /// <inheritdoc/>
    public override Tensor ToDense() => WithOperand(w =>
    {
        if (Shape.Rank > 1)
            return F.Dequantize(w, Shape);
        using var stored = F.Dequantize(w, new Shape(StoredRows, StoredCols));
        using var flat = stored.Reshape(-1);
        return flat.Narrow(0, 0, checked((int)Shape.Numel));
    });

    /// <summary>The metadata key of a master-free weight's rounding stream ("seed,draws").</summary>
    private string StreamKey => $"{Name}.rounding_stream";

    /// <inheritdoc/>
    protected internal override IEnumerable<KeyValuePair<string, string>> Metadata()
    {
        if (Codes?.Packing is { } packing)
            yield return new(StreamKey, string.Create(CultureInfo.InvariantCulture, $"{packing.Stream.Seed},{packing.Stream.Draws}"));
    }

    /// <inheritdoc/>
    protected internal override void Check(IO.SafeTensorsFile file)
    {
        base.Check(file);
        if (Mode == QuantMode.MasterFree)
            StoredStream(file);
    }

    /// <inheritdoc/>
    protected internal override void Load(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        base.Load(file, optimizer);
        if (Codes?.Packing is { } packing)
            packing.Stream = StoredStream(file);
    }

    private (ulong Seed, ulong Draws) StoredStream(IO.SafeTensorsFile file)
    {
        var parts = file.Metadata.GetValueOrDefault(StreamKey)?.Split(',');
        if (parts is not [var seed, var draws]
            || !ulong.TryParse(seed, CultureInfo.InvariantCulture, out var s)
            || !ulong.TryParse(draws, CultureInfo.InvariantCulture, out var d))
            throw new ArgumentException($"the saved state has no valid '{StreamKey}' (\"seed,draws\" of the master-free weight's stochastic rounding)");
        return (s, d);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Layout} {Shape}, {Mode}{(Spec.ActivationBits > 0 ? $", activations: {Spec.ActivationBits} bits" : "")}";
}
