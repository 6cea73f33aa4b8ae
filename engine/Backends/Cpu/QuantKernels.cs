using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Frugal.Backends.Cpu;

/// <summary>
/// CPU kernels of packed low-bit weights (layout: <see cref="QuantView"/>), the twins of <c>kernels/quant.cu</c>:
/// quantization per group (the scheme's scale and zero, then nearest or stochastic rounding), dequantization, and the
/// products X·Wᵀ and dY·W with dequantization fused: the packed SGEMM takes W's codes and unpacks them straight into
/// its packing buffer, one KC × NC block at a time, so no dense copy of W is ever made.
/// Every scheme only picks a group's scale, zero and code range; rounding is then the same for all: to the nearest
/// code, or stochastic. Arithmetic is written as the CUDA kernels write it (sums in group order, fused multiply-adds spelled out), so
/// both give the same codes.
/// </summary>
internal static unsafe class QuantKernels
{
    /// <summary>Values from which quantizing runs on several threads: each costs tens of nanoseconds (group
    /// statistics, a Philox draw when stochastic, the code), so a master-free update's 16,384-value chunk pays for it.</summary>
    private const long QuantizeThreshold = 1 << 12;

    /// <summary>Codes and scales of <paramref name="q"/> from dense row-major values.</summary>
    public static void Quantize(in QuantView q, float* dense, in QuantizeArgs a)
    {
        var (w, args) = (q, a);
        // Eight groups hold 8·group·bits bits, a whole number of bytes: chunks of eight never share a code byte.
        var chunks = (w.Groups + 7) / 8;
        StridedLoop.ForRows(chunks, 8L * w.Group, (c0, c1) =>
        {
            var (first, end) = (c0 * 8 * w.Group, Math.Min(c1 * 8, w.Groups) * w.Group);
            QuantizeRange(w, dense + first, first, (int)(end - first), args);
        }, QuantizeThreshold);
    }

    /// <summary>Codes and scales of the whole groups of values first .. first + count of <paramref name="q"/> (first
    /// on a byte of codes) from <paramref name="values"/>, which holds just those values.</summary>
    public static void QuantizeRange(in QuantView q, float* values, long first, int count, in QuantizeArgs a)
    {
        // Codes are OR-ed in; unused bits stay 0.
        NativeMemory.Clear((byte*)q.Codes + first * q.Bits / 8, (nuint)(((long)count * q.Bits + 7) / 8));
        for (var g = first / q.Group; g < (first + count) / q.Group; g++)
            QuantizeGroup(q, values + (g * q.Group - first), g, a);
    }

    [SkipLocalsInit]   // the rounding offsets are written before they are read
    private static void QuantizeGroup(in QuantView q, float* x, long g, in QuantizeArgs a)
    {
        var n = q.Group;
        var levels = (1 << q.Bits) - 1;
        float scale, zero;
        int lo = 0, hi = levels;
        switch (a.Scheme)
        {
            case QuantScheme.Symmetric:
            {
                var qmax = (1 << (q.Bits - 1)) - 1;
                var absmax = MathF.Abs(TensorPrimitives.MaxMagnitude(new ReadOnlySpan<float>(x, n)));   // NaN stays NaN
                (scale, zero, lo, hi) = (absmax / qmax, 1 << (q.Bits - 1), (1 << (q.Bits - 1)) - qmax, (1 << (q.Bits - 1)) + qmax);
                break;
            }
            case QuantScheme.Asymmetric:
            {
                var span = new ReadOnlySpan<float>(x, n);
                float min = TensorPrimitives.Min(span), max = TensorPrimitives.Max(span);
                scale = (max - min) / levels;
                if (scale == 0)
                    scale = min == 0 ? 1 : MathF.Abs(min);   // one value: code 0 reads back min exactly
                zero = -min / scale;
                break;
            }
            case QuantScheme.Ternary:
            {
                var sum = 0f;
                for (var i = 0; i < n; i++)
                    sum += MathF.Abs(x[i]);
                var threshold = 0.7f * (sum / n);
                float above = 0;
                var count = 0;
                for (var i = 0; i < n; i++)
                {
                    if (MathF.Abs(x[i]) > threshold)
                        (above, count) = (above + MathF.Abs(x[i]), count + 1);
                }
                (scale, zero, hi) = (count > 0 ? above / count : 0, 1, 2);
                break;
            }
            default:
            {
                var sum = 0f;
                for (var i = 0; i < n; i++)
                    sum += MathF.Abs(x[i]);
                (scale, zero) = (2 * (sum / n), 0.5f);   // ±α = 2α · (code − ½)
                break;
            }
        }
        ((QuantScale*)q.Scales)[g] = new QuantScale(scale, zero);
        var inv = scale > 0 ? 1 / scale : 0;
        var codes = (byte*)q.Codes;
        // The rounding offsets a chunk at a time: the stream's 16-bit offsets, or ½ for nearest.
        const int Chunk = 256;
        Span<float> u = stackalloc float[Math.Min(n, Chunk)];
        for (var i0 = 0; i0 < n; i0 += Chunk)
        {
            var m = Math.Min(Chunk, n - i0);
            if (a.Stochastic)
                Philox.RoundingOffsets(a.Seed, a.Offset + (ulong)(g * n + i0), u[..m]);
            else
                u[..m].Fill(0.5f);
            var i = i0;
            if (q.Bits == 8 && Vector256.IsHardwareAccelerated)
                i = Codes8(x, inv, zero, u, lo, hi, codes + g * n, i0, m);
            else if (q.Bits == 4 && Vector256.IsHardwareAccelerated && ((g * n + i0) & 1) == 0)
                i = Codes4(x, inv, zero, u, lo, hi, codes, g * n, i0, m);
            for (; i < i0 + m; i++)
            {
                var index = g * n + i;
                var code = Math.Clamp((int)MathF.Floor(MathF.FusedMultiplyAdd(x[i], inv, zero) + u[i - i0]), lo, hi);
                var bit = index * q.Bits;
                codes[bit >> 3] |= (byte)(code << (int)(bit & 7));
            }
        }
    }

    /// <summary>Eight codes of a group from x[i .. i + 8) in a vector, as the scalar loop computes them (fused
    /// multiply-add, plus the offset u, floor; NaN read as 0; clamped to [lo, hi]).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> EightCodes(float* x, float* u, Vector256<float> inv, Vector256<float> zero, Vector256<float> lo, Vector256<float> hi)
    {
        var f = Vector256.Floor(Vector256.FusedMultiplyAdd(Vector256.Load(x), inv, zero) + Vector256.Load(u));
        f = Vector256.MinNative(Vector256.MaxNative(Vector256.ConditionalSelect(Vector256.Equals(f, f), f, Vector256<float>.Zero), lo), hi);
        return Vector256.ConvertToInt32Native(f);   // no NaN left, and within [lo, hi]: the native forms
    }

    /// <summary>8-bit codes i0, i0 + 8, ... of a group in vectors, one byte each; returns where the scalar loop
    /// takes over.</summary>
    private static int Codes8(float* x, float inv, float zero, ReadOnlySpan<float> u, int lo, int hi, byte* codes, int i0, int m)
    {
        Vector256<float> vInv = Vector256.Create(inv), vZero = Vector256.Create(zero), vLo = Vector256.Create((float)lo), vHi = Vector256.Create((float)hi);
        var i = i0;
        fixed (float* pu = u)
        {
            for (; i + 8 <= i0 + m; i += 8)
            {
                var c = EightCodes(x + i, pu + (i - i0), vInv, vZero, vLo, vHi).AsUInt32();
                var bytes = Vector256.Narrow(Vector256.Narrow(c, c), Vector256.Narrow(c, c));
                *(ulong*)(codes + i) = bytes.AsUInt64().GetElement(0);
            }
        }
        return i;
    }

    /// <summary>4-bit codes of a group from an even value index <paramref name="start"/> + i0, sixteen in two vectors
    /// and then two per byte (low nibble first); returns where the scalar loop takes over.</summary>
    private static int Codes4(float* x, float inv, float zero, ReadOnlySpan<float> u, int lo, int hi, byte* codes, long start, int i0, int m)
    {
        Vector256<float> vInv = Vector256.Create(inv), vZero = Vector256.Create(zero), vLo = Vector256.Create((float)lo), vHi = Vector256.Create((float)hi);
        var i = i0;
        fixed (float* pu = u)
        {
            for (; i + 16 <= i0 + m; i += 16)
            {
                // Sixteen codes in 16-bit lanes; each 32-bit lane's pair becomes one byte, even code low.
                var pairs = Vector256.Narrow(EightCodes(x + i, pu + (i - i0), vInv, vZero, vLo, vHi), EightCodes(x + i + 8, pu + (i - i0) + 8, vInv, vZero, vLo, vHi)).AsInt32();
                var bytes = (pairs | (pairs >>> 12)) & Vector256.Create(0xFF);
                var packed = Vector256.Narrow(Vector256.Narrow(bytes, bytes), Vector256.Narrow(bytes, bytes));
                *(ulong*)(codes + ((start + i) >> 1)) = packed.AsUInt64().GetElement(0);
            }
        }
        return i;
    }

    /// <summary>Dense row-major values of <paramref name="q"/>.</summary>
    public static void Dequantize(in QuantView q, float* dense) => DequantizeRows(q, 0, q.Rows, dense);

    /// <summary>Rows r0 .. r1 of <paramref name="q"/> into <paramref name="dst"/> (row-major, Cols per row), rows in
    /// parallel when large.</summary>
    private static void DequantizeRows(in QuantView q, int r0, int r1, float* dst)
    {
        var w = q;
        StridedLoop.ForRows(r1 - r0, w.Cols, (a, b) =>
        {
            for (var r = r0 + a; r < r0 + b; r++)
                DequantizeRange(w, r * w.Cols, w.Cols, dst + (r - r0) * w.Cols, 1);
        });
    }

    /// <summary>Values first .. first + count of <paramref name="q"/> (row-major order) into dst[0], dst[stride], ...:
    /// value = scale · (code − zero), a group at a time; below 8 bits through a table of the group's 2^bits values
    /// when the run is long enough to pay for it.</summary>
    public static void DequantizeRange(in QuantView q, long first, int count, float* dst, int stride)
    {
        var codes = (byte*)q.Codes;
        var scales = (QuantScale*)q.Scales;
        int bits = q.Bits, mask = (1 << bits) - 1;
        var table = stackalloc float[16];
        var end = first + count;
        for (var i = first; i < end;)
        {
            var g = i / q.Group;
            var stop = Math.Min(end, (g + 1) * q.Group);
            var s = scales[g];
            if (bits == 8 && stride == 1)
            {
                // The group's run in vectors: widened codes, minus zero, times scale (the scalar order).
                Vector<float> zero = new(s.Zero), scale = new(s.Scale);
                var w = Vector<float>.Count;
                for (; i + 4 * w <= stop; i += 4 * w, dst += 4 * w)
                {
                    var (a, b, c, d) = CpuBackend.Floats(Vector.Load(codes + i));
                    Vector.Store((a - zero) * scale, dst);
                    Vector.Store((b - zero) * scale, dst + w);
                    Vector.Store((c - zero) * scale, dst + 2 * w);
                    Vector.Store((d - zero) * scale, dst + 3 * w);
                }
            }
            if (bits == 8)
            {
                for (; i < stop; i++, dst += stride)
                    *dst = s.Scale * (codes[i] - s.Zero);
                continue;
            }
            if (stop - i >= 2 << bits)
            {
                for (var code = 0; code <= mask; code++)
                    table[code] = s.Scale * (code - s.Zero);
                if (bits == 4 && stride == 1 && (i & 1) == 0)
                {
                    // Sixteen values from eight bytes in vectors (each byte twice, low nibble first, minus zero,
                    // times scale: the table's values), then two values per byte.
                    Vector128<float> zero = Vector128.Create(s.Zero), scale = Vector128.Create(s.Scale);
                    var twice = Vector128.Create((byte)0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
                    var low = Vector128.Create((ushort)0x00FF).AsByte();
                    for (; Vector128.IsHardwareAccelerated && i + 16 <= stop; i += 16, dst += 16)
                    {
                        var pairs = Vector128.Shuffle(Vector128.CreateScalar(*(ulong*)(codes + (i >> 1))).AsByte(), twice);
                        var nibbles = Vector128.ConditionalSelect(low, pairs & Vector128.Create((byte)15), pairs >>> 4);
                        var (a, b) = Vector128.Widen(nibbles);
                        var (a0, a1) = Vector128.Widen(a);
                        var (b0, b1) = Vector128.Widen(b);
                        Vector128.Store((Vector128.ConvertToSingle(a0.AsInt32()) - zero) * scale, dst);
                        Vector128.Store((Vector128.ConvertToSingle(a1.AsInt32()) - zero) * scale, dst + 4);
                        Vector128.Store((Vector128.ConvertToSingle(b0.AsInt32()) - zero) * scale, dst + 8);
                        Vector128.Store((Vector128.ConvertToSingle(b1.AsInt32()) - zero) * scale, dst + 12);
                    }
                    for (; i + 2 <= stop; i += 2, dst += 2)
                    {
                        var b = codes[i >> 1];
                        (dst[0], dst[1]) = (table[b & 15], table[b >> 4]);
                    }
                }
                for (var bit = i * bits; i < stop; i++, bit += bits, dst += stride)
                    *dst = table[(codes[bit >> 3] >> (int)(bit & 7)) & mask];
                continue;
            }
            for (var bit = i * bits; i < stop; i++, bit += bits, dst += stride)
                *dst = s.Scale * (((codes[bit >> 3] >> (int)(bit & 7)) & mask) - s.Zero);
        }
    }

    /// <summary>y [batch, Rows] = x [batch, Cols] · Wᵀ (transposed) or y [batch, Cols] = x [batch, Rows] · W: the
    /// packed SGEMM with W's codes unpacked straight into its packing buffer, one KC × NC block at a time.</summary>
    public static void MatMul(in QuantView q, bool transposed, int batch, float* x, float* y)
    {
        var w = q;
        if (transposed)
        {
            // op(B) = Wᵀ [Cols, Rows]: column c of a panel is W's row c, read along its columns p0 .. p0 + kc.
            Gemm.SgemmSourcedB(false, batch, w.Rows, w.Cols, x, w.Cols, (p0, c0, kc, nc, nr, dst) =>
            {
                for (var j = 0; j < RoundUp(nc, nr); j++)
                {
                    var panel = dst + (long)(j / nr) * nr * kc + j % nr;
                    if (j < nc)
                        DequantizeRange(w, (long)(c0 + j) * w.Cols + p0, kc, panel, nr);
                    else
                        Zero(panel, kc, nr);
                }
            }, 0, y, w.Rows);
        }
        else
        {
            // op(B) = W [Rows, Cols]: row p of every panel is nr consecutive values of W's row p0 + p, unpacked a
            // whole block row (nc values) at a time, then dealt out to the panels.
            Gemm.SgemmSourcedB(false, batch, w.Cols, w.Rows, x, w.Rows, (p0, c0, kc, nc, nr, dst) =>
            {
                Span<float> buffer = nc <= 8192 ? stackalloc float[nc] : new float[nc];
                fixed (float* row = buffer)
                {
                    for (var p = 0; p < kc; p++)
                    {
                        DequantizeRange(w, (long)(p0 + p) * w.Cols + c0, nc, row, 1);
                        for (var jp = 0; jp < nc; jp += nr)
                        {
                            var cols = Math.Min(nr, nc - jp);
                            var to = new Span<float>(dst + (long)jp * kc + (long)p * nr, nr);
                            new ReadOnlySpan<float>(row + jp, cols).CopyTo(to);
                            to[cols..].Clear();
                        }
                    }
                }
            }, 0, y, w.Cols);
        }
    }

    private static int RoundUp(int x, int m) => (x + m - 1) / m * m;

    private static void Zero(float* dst, int count, int stride)
    {
        for (var i = 0; i < count; i++)
            dst[(long)i * stride] = 0;
    }
}
