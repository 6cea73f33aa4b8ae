namespace Frugal;

/// <summary>Element types a tensor can store. The CPU backend computes in <see cref="F32"/> and <see cref="F64"/>;
/// the others are storage types reached through <see cref="Tensor.To(DType)"/>.</summary>
public enum DType : byte
{
    /// <summary>IEEE 754 single precision.</summary>
    F32,
    /// <summary>IEEE 754 double precision: the reference type of tests.</summary>
    F64,
    /// <summary>IEEE 754 half precision.</summary>
    F16,
    /// <summary>bfloat16: the upper half of an F32.</summary>
    BF16,
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>Unsigned 8-bit integer; also the result type of comparisons (0 or 1).</summary>
    U8,
    /// <summary>Signed 32-bit integer: class labels, indices.</summary>
    I32,
}

/// <summary>Facts about each <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>Bytes of one element.</summary>
    public static int SizeOf(this DType dtype) => dtype switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F64 => 8,
        DType.F16 or DType.BF16 => 2,
        DType.I8 or DType.U8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>True for the types the CPU backend does arithmetic in (F32, F64).</summary>
    public static bool IsComputeType(this DType dtype) => dtype is DType.F32 or DType.F64;

    /// <summary>The dtype of a .NET element type (float, double, <see cref="Half"/>, <see cref="BFloat16"/>, sbyte, byte, int).</summary>
    /// <exception cref="NotSupportedException">Another type.</exception>
    internal static DType Of<T>() where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return DType.F32;
        if (typeof(T) == typeof(double)) return DType.F64;
        if (typeof(T) == typeof(Half)) return DType.F16;
        if (typeof(T) == typeof(BFloat16)) return DType.BF16;
        if (typeof(T) == typeof(sbyte)) return DType.I8;
        if (typeof(T) == typeof(byte)) return DType.U8;
        if (typeof(T) == typeof(int)) return DType.I32;
        throw new NotSupportedException($"no dtype for element type {typeof(T).Name}");
    }

    /// <summary>True for floating-point types.</summary>
    public static bool IsFloat(this DType dtype) => dtype is DType.F32 or DType.F64 or DType.F16 or DType.BF16;

    /// <summary>Lower-case name as used in kernel names and file metadata (f32, bf16, i32 ...).</summary>
    public static string Name(this DType dtype) => dtype switch
    {
        DType.F32 => "f32",
        DType.F64 => "f64",
        DType.F16 => "f16",
        DType.BF16 => "bf16",
        DType.I8 => "i8",
        DType.U8 => "u8",
        DType.I32 => "i32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };
}
