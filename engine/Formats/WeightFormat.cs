using System.Collections.Concurrent;
using System.Globalization;

namespace Frugal.Formats;

/// <summary>
/// How a layer stores its weight: a format with its settings, which makes the layer's <see cref="Weight"/>
/// (<see cref="Create"/>). Built in: <see cref="Dense"/>, <see cref="Csr"/>, <see cref="Bsr"/>,
/// <see cref="Quantized"/>, <see cref="LowRank(int)"/>, and compositions (<see cref="StoredAs"/>): a sparse weight whose
/// stored values are low-bit codes, low-rank factors in low bits. A format outside the engine registers its text form
/// with <see cref="Register"/> and then works everywhere a format is parsed (the CLI's <c>--format</c>).
/// <para>Text form (<see cref="Parse"/>): <c>dense</c>, <c>csr:D</c>, <c>bsr:D[:B]</c>, <c>lowrank:R</c> (a rank) or
/// <c>lowrank:F</c> (a fraction of each layer's dense parameters, F in (0, 1)),
/// <c>q8|q4|q2|q1[:G|:row][:latent|:masterfree][:symmetric|:asymmetric|:ternary|:binary][:aK]</c>, a registered
/// format's form, and <c>STRUCTURE+VALUES</c>: a structured format (csr, bsr, lowrank) whose stored values are in the
/// value format after the <c>+</c> (<c>csr:0.1+q4</c>, <c>lowrank:32+q8:latent</c>).</para>
/// </summary>
public abstract record WeightFormat
{
    private static readonly ConcurrentDictionary<string, (Func<string, string[], WeightFormat> Parse, string Usage)> s_registry = new(StringComparer.Ordinal);

    /// <summary>Every value stored, in any float dtype.</summary>
    public static WeightFormat Dense { get; } = new DenseWeightFormat();

    /// <summary>CSR weights of density <paramref name="density"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1].</exception>
    public static WeightFormat Csr(double density) => new SparseWeightFormat(TensorFormat.Csr, SparseWeightFormat.CheckDensity(density));

    /// <summary>BSR weights of <paramref name="block"/> × <paramref name="block"/> blocks (8, 16 or 32), a fraction
    /// <paramref name="density"/> of the blocks stored.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1], or another block size.</exception>
    public static WeightFormat Bsr(double density, int block = 16) => new SparseWeightFormat(TensorFormat.Bsr(block), SparseWeightFormat.CheckDensity(density));

    /// <summary>Low-rank weights U·Vᵀ of rank <paramref name="rank"/> (at most each layer's smaller size).</summary>
    /// <exception cref="ArgumentOutOfRangeException">rank ≤ 0.</exception>
    public static WeightFormat LowRank(int rank) => rank > 0
        ? new LowRankWeightFormat(rank, 1)
        : throw new ArgumentOutOfRangeException(nameof(rank), $"lowrank: the rank must be positive, got {rank}");

    /// <summary>Low-rank weights whose factors hold <paramref name="fraction"/> of each layer's dense parameters.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fraction outside (0, 1].</exception>
    public static WeightFormat LowRank(double fraction) => fraction > 0 && fraction <= 1
        ? new LowRankWeightFormat(null, fraction)
        : throw new ArgumentOutOfRangeException(nameof(fraction), $"lowrank: the fraction of parameters must be in (0, 1], got {fraction}");

    /// <summary>Quantized weights of <paramref name="bits"/>-bit codes (1, 2, 4 or 8) with a scale per
    /// <paramref name="group"/> values along each row (null: <see cref="QuantizedWeightFormat.DefaultGroup"/> where it
    /// divides the layer's input dimension, else one group per row; 0: one group per row), the
    /// <paramref name="scheme"/> (by default symmetric absmax for 8 and 4 bits, ternary for 2, binary for 1), trained
    /// in <paramref name="mode"/>; linear layers may also quantize their inputs to <paramref name="activationBits"/> (1..7).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Bits, group, scheme or activation bits out of range.</exception>
    public static WeightFormat Quantized(int bits, int? group = null, QuantScheme? scheme = null, QuantMode mode = QuantMode.MasterFree, int activationBits = 0)
        => QuantizedWeightFormat.Create(bits, group, scheme, mode, activationBits);

    /// <summary>The format's short name, the profiler's per-format key ("dense", "csr", "bsr16", "q4", "q4-latent",
    /// "lowrank", "csr+q4").</summary>
    public abstract string Key { get; }

    /// <summary>Stored fraction of the weight (1 unless sparse).</summary>
    public virtual double Density => 1;

    /// <summary>The format of the stored values (a composition's value format), or null for F32 values.</summary>
    public virtual WeightFormat? Values => null;

    /// <summary>The same format at another density (sparse formats), else this format.</summary>
    public virtual WeightFormat WithDensity(double density) => this;

    /// <summary>This format with its stored values (a sparse weight's values, low-rank factors) in
    /// <paramref name="values"/> (a quantized format): the composition <c>this+values</c>.</summary>
    /// <exception cref="NotSupportedException">This format has no stored values to put in another format, or
    /// <paramref name="values"/> cannot hold them.</exception>
    public virtual WeightFormat StoredAs(WeightFormat values)
        => throw new NotSupportedException($"{this}: its stored values cannot be in another format (compositions are csr, bsr or lowrank + a quantized format)");

    /// <summary>True when a weight of logical shape <paramref name="shape"/> can take this format.</summary>
    public virtual bool Fits(Shape shape) => true;

    /// <summary>A weight of logical shape <paramref name="shape"/> in this format, initialised from scratch by
    /// <paramref name="init"/>, in <paramref name="dtype"/> (formats other than dense are F32).</summary>
    /// <exception cref="ArgumentException">The shape does not fit the format, or the dtype is not supported.</exception>
    public abstract Weight Create(Shape shape, WeightInit init, Device? device = null, DType dtype = DType.F32);

    /// <summary>Registers the text form of a format defined outside the engine: <see cref="Parse"/> gives text whose
    /// first ':'-separated field is <paramref name="name"/> to <paramref name="parse"/>(text, fields).</summary>
    /// <param name="name">The first field (lower case letters and digits), not a built-in format's.</param>
    /// <param name="parse">Makes the format; throws <see cref="FormatException"/> for bad settings.</param>
    /// <param name="usage">The accepted form, for error messages (e.g. "blockdiag:B").</param>
    /// <exception cref="ArgumentException">The name is taken or malformed.</exception>
    public static void Register(string name, Func<string, string[], WeightFormat> parse, string usage)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentException.ThrowIfNullOrWhiteSpace(usage);
        if (!name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c)) || BuiltIn(name))
            throw new ArgumentException($"weight format name '{name}' is a built-in format's or not lower-case letters and digits", nameof(name));
        if (!s_registry.TryAdd(name, (parse, usage)) && s_registry[name].Parse != parse)
            throw new ArgumentException($"weight format '{name}' is already registered ({s_registry[name].Usage})", nameof(name));
    }

    private static bool BuiltIn(string name) => name is "dense" or "csr" or "bsr" or "lowrank" or "q8" or "q4" or "q2" or "q1";

    /// <summary>Parses the text form (see the class summary).</summary>
    /// <exception cref="FormatException">Anything else, with the accepted forms.</exception>
    public static WeightFormat Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var plus = text.IndexOf('+', StringComparison.Ordinal);
        if (plus >= 0)
        {
            var structure = ParseOne(text[..plus]);
            var values = ParseOne(text[(plus + 1)..]);
            try
            {
                return structure.StoredAs(values);
            }
            catch (NotSupportedException e)
            {
                throw new FormatException($"weight format '{text}': {e.Message}", e);
            }
        }
        return ParseOne(text);
    }

    private static WeightFormat ParseOne(string text)
    {
        var parts = text.Split(':');
        if (parts[0] is "q8" or "q4" or "q2" or "q1")
            return QuantizedWeightFormat.Parse(text, parts);
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
                if (s_registry.TryGetValue(parts[0], out var registered))
                    return registered.Parse(text, parts);
                var others = string.Concat(s_registry.Values.Select(v => ", " + v.Usage));
                throw new FormatException($"weight format '{text}' is not one of: dense, csr:D, bsr:D:B, lowrank:R, lowrank:F, q8|q4|q2|q1[:G|:row][:latent|:masterfree]{others}, or STRUCTURE+VALUES such as csr:0.1+q4 (density D and fraction F in (0, 1), block B = 8, 16 or 32, rank R a positive integer, group G a positive integer)");
        }
    }
}

/// <summary>The dense format: every value stored (any float dtype), PyTorch's layers exactly.</summary>
public sealed record DenseWeightFormat : WeightFormat
{
    internal DenseWeightFormat()
    {
    }

    /// <inheritdoc/>
    public override string Key => "dense";

    /// <inheritdoc/>
    public override Weight Create(Shape shape, WeightInit init, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(init);
        return new DenseWeight(shape, init, device, dtype);
    }

    /// <inheritdoc/>
    public override string ToString() => Key;
}
