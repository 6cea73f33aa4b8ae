using System.Runtime.CompilerServices;

namespace Frugal.Backends;

/// <summary>Element i of a buffer of any dtype as double, and back: the one definition of every dtype's
/// conversion (round to nearest even for floats; integers rounded and saturated), shared by the backends.</summary>
internal static unsafe class DTypeCodec
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Read(byte* p, DType t, long i) => t switch
    {
        DType.F32 => ((float*)p)[i],
        DType.F64 => ((double*)p)[i],
        DType.F16 => (double)((Half*)p)[i],
        DType.BF16 => (float)((BFloat16*)p)[i],
        DType.I8 => ((sbyte*)p)[i],
        DType.U8 => p[i],
        DType.I32 => ((int*)p)[i],
        _ => throw new NotSupportedException(t.ToString()),
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(byte* p, DType t, long i, double v)
    {
        switch (t)
        {
            case DType.F32: ((float*)p)[i] = (float)v; break;
            case DType.F64: ((double*)p)[i] = v; break;
            case DType.F16: ((Half*)p)[i] = (Half)v; break;
            case DType.BF16: ((BFloat16*)p)[i] = (BFloat16)v; break;
            case DType.I8: ((sbyte*)p)[i] = (sbyte)Math.Clamp(Math.Round(v), sbyte.MinValue, sbyte.MaxValue); break;
            case DType.U8: p[i] = (byte)Math.Clamp(Math.Round(v), 0, byte.MaxValue); break;
            case DType.I32: ((int*)p)[i] = (int)Math.Clamp(Math.Round(v), int.MinValue, int.MaxValue); break;
            default: throw new NotSupportedException(t.ToString());
        }
    }
}
