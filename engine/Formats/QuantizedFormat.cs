using Frugal.Backends;
using Frugal.Memory;

namespace Frugal.Formats;

/// <summary>
/// The quantized format: a [rows, cols] weight stored as packed <see cref="Bits"/>-bit codes (Parameter) with an F32
/// scale and zero point per group of <see cref="Group"/> values along each row (FormatMeta); value = scale · (code −
/// zero). The layout is <c>kernels/common.cuh</c>'s <c>QuantShape</c> (mirrored by <see cref="QuantView"/>):
/// value r·cols + c at bit offset (r·cols + c)·bits, least significant bits first. The gradient is a dense F32
/// [rows, cols] (a transient: the latent weights take it through the straight-through estimator, or a master-free
/// update consumes it), and optimizer state is one per weight value.
/// </summary>
public sealed class QuantizedFormat : TensorFormat
{
    private QuantizedFormat(int bits, int group, QuantScheme scheme) => (Bits, Group, Scheme) = (bits, group, scheme);

    /// <summary>The format of <paramref name="bits"/>-bit codes in groups of <paramref name="group"/> values (0: one
    /// group per row) with <paramref name="scheme"/> (by default symmetric for 8 and 4 bits, ternary for 2, binary for 1).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Bits not 1, 2, 4 or 8, a negative group, or a scheme the bits
    /// cannot hold (symmetric needs 2 bits or more, ternary exactly 2, binary exactly 1).</exception>
    public static QuantizedFormat Create(int bits, int group = 0, QuantScheme? scheme = null)
    {
        if (bits is not (1 or 2 or 4 or 8))
            throw new ArgumentOutOfRangeException(nameof(bits), $"quantized: bits must be 1, 2, 4 or 8, got {bits}");
        if (group < 0)
            throw new ArgumentOutOfRangeException(nameof(group), $"quantized: the group must be positive (or 0 for one group per row), got {group}");
        var s = scheme ?? DefaultScheme(bits);
        var fits = s switch
        {
            QuantScheme.Symmetric => bits >= 2,
            QuantScheme.Ternary => bits == 2,
            QuantScheme.Binary => bits == 1,
            _ => true,
        };
        if (!fits)
            throw new ArgumentOutOfRangeException(nameof(scheme), $"quantized: the {s} scheme cannot use {bits}-bit codes (symmetric needs 2 bits or more, ternary 2, binary 1)");
        return new QuantizedFormat(bits, group, s);
    }

    /// <summary>The scheme of <see cref="Create"/> when none is given: symmetric absmax for 8 and 4 bits, ternary for
    /// 2, binary for 1.</summary>
    public static QuantScheme DefaultScheme(int bits) => bits switch { 2 => QuantScheme.Ternary, 1 => QuantScheme.Binary, _ => QuantScheme.Symmetric };

    /// <summary>Bits per code.</summary>
    public int Bits { get; }

    /// <summary>Values per scale along a row (0: one group per row).</summary>
    public int Group { get; }

    /// <summary>How each group picks its scale and zero.</summary>
    public QuantScheme Scheme { get; }

    /// <inheritdoc/>
    public override string Name => Scheme == DefaultScheme(Bits) ? $"q{Bits}" : $"q{Bits}-{Scheme.ToString().ToLowerInvariant()}";

    /// <summary>The group size a weight with <paramref name="cols"/> columns uses.</summary>
    /// <exception cref="ArgumentException">The group does not divide the columns.</exception>
    public int GroupFor(int rows, int cols)
    {
        if (rows <= 0 || cols <= 0)
            throw new ArgumentException($"{this}: a [{rows}, {cols}] weight has no values");
        if (Group == 0)
            return cols;
        if (cols % Group != 0)
            throw new ArgumentException($"{this}: the group of {Group} values does not divide the input dimension {cols} of a [{rows}, {cols}] weight; use a group that divides it, or 0 for one group per row");
        return Group;
    }

    /// <summary>This format with another group size.</summary>
    public QuantizedFormat WithGroup(int group) => Create(Bits, group, Scheme);

    /// <summary>The codes' range: [1, 2^b − 1] for symmetric (centred on 2^(b−1)), [0, 2] for ternary, else [0, 2^b − 1].</summary>
    public (int Lo, int Hi) CodeRange => Scheme switch
    {
        QuantScheme.Symmetric => (1, (1 << Bits) - 1),
        QuantScheme.Ternary => (0, 2),
        _ => (0, (1 << Bits) - 1),
    };

    /// <summary>Bytes of packed codes of a [rows, cols] weight.</summary>
    public long CodeBytes(int rows, int cols) => ((long)rows * cols * Bits + 7) / 8;

    /// <inheritdoc/>
    public override IReadOnlyDictionary<MemoryCategory, long> StorageBytes(int rows, int cols, long stored, DType dtype)
    {
        var group = GroupFor(rows, cols);
        if (stored != (long)rows * cols)
            throw new ArgumentException($"{this} [{rows}, {cols}] stores {(long)rows * cols} values, not {stored}");
        return new Dictionary<MemoryCategory, long>
        {
            [MemoryCategory.Parameter] = CodeBytes(rows, cols),
            [MemoryCategory.FormatMeta] = 8L * (stored / group),
        };
    }

    /// <summary>Codes and scales of a dense row-major [rows, cols] matrix, rounded to nearest (on the CPU device).</summary>
    /// <exception cref="ArgumentException">The values do not fill [rows, cols], or the group does not divide cols.</exception>
    public QuantizedData FromDense(ReadOnlySpan<float> dense, int rows, int cols)
    {
        GroupFor(rows, cols);
        if (dense.Length != (long)rows * cols)
            throw new ArgumentException($"{this}: {dense.Length} values do not fill [{rows}, {cols}]");
        using var values = Tensor.FromArray(dense.ToArray(), new Shape(rows, cols), Device.Cpu);
        var w = F.Quantize(values, this);
        try
        {
            return new QuantizedData(this, rows, cols, w.Codes.ToArray<byte>(), System.Runtime.InteropServices.MemoryMarshal.Cast<float, QuantScale>(w.Scales.ToArray<float>()).ToArray());
        }
        finally
        {
            w.DisposeParts();
        }
    }

    /// <summary>Checked parts of a [rows, cols] weight: the packed codes and one scale per group as they were stored
    /// (a checkpoint). Every length, scale, zero point and code is checked against the format.</summary>
    /// <exception cref="ArgumentException">A part is inconsistent, naming it and where.</exception>
    public QuantizedData FromParts(byte[] codes, QuantScale[] scales, int rows, int cols)
    {
        ArgumentNullException.ThrowIfNull(codes);
        ArgumentNullException.ThrowIfNull(scales);
        var group = GroupFor(rows, cols);
        var what = $"{this} [{rows}, {cols}] in groups of {group}";
        if (codes.Length != CodeBytes(rows, cols))
            throw new ArgumentException($"{what}: {codes.Length} code bytes, expected {CodeBytes(rows, cols)}");
        if (scales.Length != (long)rows * cols / group)
            throw new ArgumentException($"{what}: {scales.Length} scales, expected {(long)rows * cols / group}");
        float? zero = Scheme switch { QuantScheme.Symmetric => 1 << (Bits - 1), QuantScheme.Ternary => 1, QuantScheme.Binary => 0.5f, _ => null };
        for (var g = 0; g < scales.Length; g++)
        {
            var s = scales[g];
            if (!float.IsFinite(s.Scale) || s.Scale < 0 || !float.IsFinite(s.Zero) || (zero is { } z && s.Zero != z))
                throw new ArgumentException($"{what}: group {g} has scale {s.Scale} and zero {s.Zero}; a {Scheme} group needs a finite scale ≥ 0{(zero is { } zz ? $" and zero {zz}" : " and a finite zero")}");
        }
        var (lo, hi) = CodeRange;
        var count = (long)rows * cols;
        for (long i = 0; i < count; i++)
        {
            var code = Code(codes, i);
            if (code < lo || code > hi)
                throw new ArgumentException($"{what}: value {i} (row {i / cols}, column {i % cols}) has code {code}, outside [{lo}, {hi}] of the {Scheme} scheme");
        }
        if (count * Bits % 8 != 0 && codes[^1] >> (int)(count * Bits % 8) != 0)
            throw new ArgumentException($"{what}: the bits after the last code are not zero");
        return new QuantizedData(this, rows, cols, codes, scales);
    }

    private int Code(byte[] codes, long i)
    {
        var bit = i * Bits;
        return (codes[bit >> 3] >> (int)(bit & 7)) & ((1 << Bits) - 1);
    }

    /// <summary>The dense row-major [rows, cols] matrix of <paramref name="data"/> (the CPU kernel; for checks and
    /// export, never used in training).</summary>
    /// <exception cref="ArgumentException">The data is of another format.</exception>
    public float[] ToDense(QuantizedData data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Format.Bits != Bits || data.Format.Scheme != Scheme)
            throw new ArgumentException($"{this}: the data is {data.Format}");
        using var codes = Tensor.FromArray(data.Codes, new Shape(data.Codes.Length), Device.Cpu);
        using var scales = Tensor.FromArray(System.Runtime.InteropServices.MemoryMarshal.Cast<QuantScale, float>(data.Scales).ToArray(), new Shape(data.Scales.Length, 2), Device.Cpu);
        using (Autograd.NoGrad())
        using (var dense = F.Dequantize(new QuantizedOperand(codes, scales, data.Format.WithGroup(data.Group == data.Cols ? 0 : data.Group), data.Rows, data.Cols, data.Group), new Shape(data.Rows, data.Cols)))
            return dense.ToArray<float>();
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name}:{(Group == 0 ? "row" : Group)}";

    /// <summary>Formats are equal when their bits, group and scheme are.</summary>
    public override bool Equals(object? obj) => obj is QuantizedFormat q && (q.Bits, q.Group, q.Scheme) == (Bits, Group, Scheme);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Bits, Group, Scheme);
}

/// <summary>A quantized weight on the host: its format, shape, packed codes and one scale per group.</summary>
public sealed record QuantizedData(QuantizedFormat Format, int Rows, int Cols, byte[] Codes, QuantScale[] Scales)
{
    /// <summary>Values per group.</summary>
    public int Group => (int)((long)Rows * Cols / Scales.Length);
}
