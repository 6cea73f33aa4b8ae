using System.Globalization;
using Frugal.Formats;

namespace Frugal.Nn;

/// <summary>
/// How a layer stores its weight: a format of the traits table (<see cref="TensorFormat"/>) with its settings
/// (density for the sparse formats, rank or parameter fraction for low rank), and the factory of Linear, Conv2d and
/// Embedding layers in that format: <c>WeightFormat.Csr(0.1).Linear(784, 512)</c> is a <see cref="SparseLinear"/>,
/// <c>WeightFormat.LowRank(64).Linear(...)</c> a <see cref="LowRankLinear"/>, <c>WeightFormat.Dense.Linear(...)</c> a
/// <see cref="Nn.Linear"/>. Text form (the CLI's <c>--format</c>): <c>dense</c>, <c>csr:D</c>, <c>bsr:D:B</c>,
/// <c>lowrank:R</c> (a rank) or <c>lowrank:F</c> (a fraction of each layer's dense parameters, F in (0, 1)),
/// <c>q8|q4|q2|q1[:G|:row][:latent|:masterfree][:symmetric|:asymmetric|:ternary|:binary][:aK]</c> (quantized; see
/// <see cref="Quantized"/>).
/// </summary>
public sealed record WeightFormat
{
    private WeightFormat(TensorFormat format, double density, int? rank = null, double fraction = 1)
        => (Format, Density, Rank, Fraction) = (format, density, rank, fraction);

    /// <summary>Default group of quantized weights: 64 values per scale where 64 divides a layer's input dimension.</summary>
    public const int DefaultGroup = 64;

    /// <summary>How quantized layers train.</summary>
    public QuantMode Mode { get; private init; } = QuantMode.MasterFree;

    /// <summary>Quantized layers: bits of DoReFa input quantization of linear layers (0: F32 inputs).</summary>
    public int ActivationBits { get; private init; }

    /// <summary>Quantized layers: the group was left to the layer (64 where it divides the input dimension, else
    /// one group per row).</summary>
    public bool AutoGroup { get; private init; }

    /// <summary>True for quantized formats.</summary>
    public bool IsQuantized => Format is QuantizedFormat;

    /// <summary>Quantized weights of <paramref name="bits"/>-bit codes (1, 2, 4 or 8) with a scale per
    /// <paramref name="group"/> values along each row (null: <see cref="DefaultGroup"/> where it divides the layer's
    /// input dimension, else one group per row; 0: one group per row), the <paramref name="scheme"/> (by default
    /// symmetric absmax for 8 and 4 bits, ternary for 2, binary for 1), trained in <paramref name="mode"/>; linear
    /// layers may also quantize their inputs to <paramref name="activationBits"/> (1..7).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Bits, group, scheme or activation bits out of range.</exception>
    public static WeightFormat Quantized(int bits, int? group = null, QuantScheme? scheme = null, QuantMode mode = QuantMode.MasterFree, int activationBits = 0)
    {
        if (activationBits is < 0 or > 7)
            throw new ArgumentOutOfRangeException(nameof(activationBits), $"quantized: activation bits must be 1..7 (0: not quantized), got {activationBits}");
        return new(QuantizedFormat.Create(bits, group ?? 0, scheme), 1) { Mode = mode, ActivationBits = activationBits, AutoGroup = group is null };
    }

    /// <summary>This format with linear layers quantizing their inputs to <paramref name="bits"/> (0: F32 inputs), for
    /// quantized formats; other formats ignore it.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Bits outside 0..7.</exception>
    public WeightFormat WithActivationBits(int bits) => !IsQuantized || bits == ActivationBits
        ? this
        : bits is >= 0 and <= 7
            ? this with { ActivationBits = bits }
            : throw new ArgumentOutOfRangeException(nameof(bits), $"quantized: activation bits must be 1..7 (0: not quantized), got {bits}");

    /// <summary>The quantized format a [rows, cols] weight gets (its group resolved).</summary>
    private QuantizedFormat QuantizedFor(int cols)
    {
        var q = (QuantizedFormat)Format;
        return AutoGroup && cols % DefaultGroup == 0 ? q.WithGroup(DefaultGroup) : q;
    }

    /// <summary>Every value stored.</summary>
    public static WeightFormat Dense { get; } = new(TensorFormat.Dense, 1);

    /// <summary>The format of the traits table.</summary>
    public TensorFormat Format { get; }

    /// <summary>Stored fraction of the weight (1 for dense).</summary>
    public double Density { get; }

    /// <summary>The rank of low-rank layers, or null when it follows <see cref="Fraction"/>.</summary>
    public int? Rank { get; }

    /// <summary>For low rank without a fixed rank: the fraction of each layer's dense parameters its factors hold.</summary>
    public double Fraction { get; }

    /// <summary>True for CSR and BSR.</summary>
    public bool IsSparse => Format is SparseFormat;

    /// <summary>True for low rank.</summary>
    public bool IsLowRank => Format is LowRankFormat;

    /// <summary>Low-rank weights of rank <paramref name="rank"/> (at most each layer's smaller size).</summary>
    /// <exception cref="ArgumentOutOfRangeException">rank ≤ 0.</exception>
    public static WeightFormat LowRank(int rank) => rank > 0
        ? new(TensorFormat.LowRank, 1, rank)
        : throw new ArgumentOutOfRangeException(nameof(rank), $"lowrank: the rank must be positive, got {rank}");

    /// <summary>Low-rank weights whose factors hold <paramref name="fraction"/> of each layer's dense parameters.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fraction outside (0, 1].</exception>
    public static WeightFormat LowRank(double fraction) => fraction > 0 && fraction <= 1
        ? new(TensorFormat.LowRank, 1, null, fraction)
        : throw new ArgumentOutOfRangeException(nameof(fraction), $"lowrank: the fraction of parameters must be in (0, 1], got {fraction}");

    /// <summary>The rank a low-rank [rows, cols] weight gets.</summary>
    public int RankFor(int rows, int cols) => Rank ?? LowRankFormat.RankFor(rows, cols, Fraction);

    /// <summary>CSR weights of density <paramref name="density"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1].</exception>
    public static WeightFormat Csr(double density) => new(TensorFormat.Csr, CheckDensity(density));

    /// <summary>BSR weights of <paramref name="block"/> × <paramref name="block"/> blocks (8, 16 or 32), a fraction
    /// <paramref name="density"/> of the blocks stored.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1], or another block size.</exception>
    public static WeightFormat Bsr(double density, int block = 16) => new(TensorFormat.Bsr(block), CheckDensity(density));

    /// <summary>The same format at another density.</summary>
    public WeightFormat WithDensity(double density) => IsSparse ? new(Format, CheckDensity(density)) : this;

    /// <summary>True when a [rows, cols] weight can take this format (BSR needs whole blocks, a fixed rank at most
    /// the smaller size).</summary>
    public bool Fits(int rows, int cols) => Format switch
    {
        QuantizedFormat q => AutoGroup || q.Group == 0 || cols % q.Group == 0,
        SparseFormat s => s.Fits(rows, cols),
        LowRankFormat => Rank is not { } r || r <= Math.Min(rows, cols),
        _ => true,
    };

    /// <summary>Parses <c>dense</c>, <c>csr:D</c> or <c>bsr:D:B</c> (B = 8, 16 or 32; 16 when left out), D in (0, 1).</summary>
    /// <exception cref="FormatException">Anything else, with the accepted forms.</exception>
    public static WeightFormat Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(':');
        if (parts[0] is "q8" or "q4" or "q2" or "q1")
            return ParseQuantized(text, parts);
        static bool Number(string s, out double d) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out d) && d > 0 && d < 1;
        switch (parts[0])
        {
            case "dense" when parts.Length == 1:
                return Dense;
            case "csr" when parts.Length == 2 && Number(parts[1], out var d):
                return Csr(d);
            case "bsr" when parts.Length is 2 or 3 && Number(parts[1], out var d)
                && (parts.Length == 2 || parts[2] is "8" or "16" or "32"):
                return Bsr(d, parts.Length == 2 ? 16 : int.Parse(parts[2], CultureInfo.InvariantCulture));
            case "lowrank" when parts.Length == 2 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var r) && r > 0:
                return LowRank(r);
            case "lowrank" when parts.Length == 2 && Number(parts[1], out var f):
                return LowRank(f);
            default:
                throw new FormatException($"weight format '{text}' is not one of: dense, csr:D, bsr:D:B, lowrank:R, lowrank:F, q8|q4|q2|q1[:G|:row][:latent|:masterfree] (density D and fraction F in (0, 1), block B = 8, 16 or 32, rank R a positive integer, group G a positive integer)");
        }
    }

    private static WeightFormat ParseQuantized(string text, string[] parts)
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
            return Quantized(bits, group, scheme, mode, activationBits);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new FormatException($"weight format '{text}': {e.Message}", e);
        }
    }

    /// <summary>A linear layer with this weight format (dense when the density is 1).</summary>
    /// <exception cref="ArgumentException">The sizes are not a whole number of the format's blocks.</exception>
    public Module Linear(int inFeatures, int outFeatures, bool bias = true, Device? device = null) => Format switch
    {
        SparseFormat s when Density < 1 => new SparseLinear(inFeatures, outFeatures, Density, bias, device, s),
        LowRankFormat => new LowRankLinear(inFeatures, outFeatures, RankFor(outFeatures, inFeatures), bias, device),
        QuantizedFormat => new QuantizedLinear(inFeatures, outFeatures, QuantizedFor(inFeatures), Mode, bias, ActivationBits, device),
        _ => new Linear(inFeatures, outFeatures, bias, device: device),
    };

    /// <summary>A square-kernel convolution with this weight format (dense when the density is 1); its weight matrix
    /// is [out, in·k·k].</summary>
    /// <exception cref="ArgumentException">The sizes are not a whole number of the format's blocks.</exception>
    public Module Conv2d(int inChannels, int outChannels, int kernel, int stride = 1, int padding = 0, int dilation = 1, bool bias = true, Device? device = null) => Format switch
    {
        SparseFormat s when Density < 1 => new SparseConv2d(inChannels, outChannels, kernel, Density, stride, padding, dilation, bias, device, s),
        LowRankFormat => new LowRankConv2d(inChannels, outChannels, kernel, RankFor(outChannels, inChannels * kernel * kernel), stride, padding, dilation, bias, device),
        QuantizedFormat => new QuantizedConv2d(inChannels, outChannels, kernel, QuantizedFor(inChannels * kernel * kernel), Mode, stride, padding, dilation, bias, device),
        _ => new Conv2d(inChannels, outChannels, kernel, stride, padding, dilation, bias, device: device),
    };

    /// <summary>An embedding of <paramref name="count"/> vectors of width <paramref name="dim"/>: ALBERT's factorized
    /// one for low rank, else the dense table (sparse embeddings are not built).</summary>
    /// <exception cref="NotSupportedException">A sparse format.</exception>
    public Module Embedding(int count, int dim, Device? device = null) => Format switch
    {
        LowRankFormat => new LowRankEmbedding(count, dim, RankFor(count, dim), device),
        SparseFormat or QuantizedFormat => throw new NotSupportedException($"Embedding: {this} is not built for embeddings (dense or lowrank)"),
        _ => new Embedding(count, dim, device),
    };

    /// <inheritdoc/>
    public override string ToString() => Format switch
    {
        SparseFormat { Block: 1 } => string.Create(CultureInfo.InvariantCulture, $"csr:{Density}"),
        SparseFormat s => string.Create(CultureInfo.InvariantCulture, $"bsr:{Density}:{s.Block}"),
        LowRankFormat => string.Create(CultureInfo.InvariantCulture, $"lowrank:{(Rank is { } r ? r : Fraction)}"),
        QuantizedFormat q => $"q{q.Bits}:{(AutoGroup ? "auto" : q.Group == 0 ? "row" : q.Group.ToString(CultureInfo.InvariantCulture))}:{(Mode == QuantMode.Latent ? "latent" : "masterfree")}"
            + $"{(q.Scheme == QuantizedFormat.DefaultScheme(q.Bits) ? "" : ":" + q.Scheme.ToString().ToLowerInvariant())}{(ActivationBits > 0 ? $":a{ActivationBits}" : "")}",
        _ => Format.Name,
    };

    private static double CheckDensity(double density) => density > 0 && density <= 1
        ? density
        : throw new ArgumentOutOfRangeException(nameof(density), $"density must be in (0, 1], got {density}");
}
