namespace Frugal;

/// <summary>bfloat16: sign, 8 exponent bits and 7 mantissa bits, the upper half of an IEEE single.
/// Conversion from float rounds to nearest, ties to even; NaN stays NaN.</summary>
public readonly struct BFloat16 : IEquatable<BFloat16>
{
    /// <summary>The raw 16 bits.</summary>
    public ushort Bits { get; }

    private BFloat16(ushort bits) => Bits = bits;

    /// <summary>From raw bits.</summary>
    public static BFloat16 FromBits(ushort bits) => new(bits);

    /// <summary>Rounds a float to the nearest bfloat16.</summary>
    public static explicit operator BFloat16(float value)
    {
        var u = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
            return new BFloat16((ushort)((u >> 16) | 0x40));
        var rounding = 0x7FFFu + ((u >> 16) & 1);
        return new BFloat16((ushort)((u + rounding) >> 16));
    }

    /// <summary>Rounds a double to the nearest bfloat16 once (no double rounding through float): the double is first
    /// narrowed to float with round-to-odd, which keeps enough bits for the final round-to-nearest-even to be exact.</summary>
    public static explicit operator BFloat16(double value)
    {
        var f = (float)value;
        if (!float.IsFinite(f) || f == value)
            return (BFloat16)f;
        var u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 1) == 0)
            u = Math.Abs((double)f) > Math.Abs(value) ? u - 1 : u + 1;
        return (BFloat16)BitConverter.UInt32BitsToSingle(u);
    }

    /// <summary>Exact widening to float.</summary>
    public static explicit operator float(BFloat16 value) => BitConverter.UInt32BitsToSingle((uint)value.Bits << 16);

    /// <inheritdoc/>
    public bool Equals(BFloat16 other) => Bits == other.Bits;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BFloat16 b && Equals(b);

    /// <inheritdoc/>
    public override int GetHashCode() => Bits;

    /// <summary>Bitwise equality.</summary>
    public static bool operator ==(BFloat16 a, BFloat16 b) => a.Equals(b);

    /// <summary>Bitwise inequality.</summary>
    public static bool operator !=(BFloat16 a, BFloat16 b) => !a.Equals(b);

    /// <inheritdoc/>
    public override string ToString() => ((float)this).ToString(System.Globalization.CultureInfo.InvariantCulture);
}
