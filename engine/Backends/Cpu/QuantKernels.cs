using System.Runtime.InteropServices;

namespace Frugal.Backends.Cpu;

/// <summary>
/// CPU kernels of packed low-bit weights (layout: <see cref="QuantView"/>), the twins of <c>kernels/quant.cu</c>:
/// quantization per group (the scheme's scale and zero, then nearest or stochastic rounding), dequantization, and the
/// products X·Wᵀ and dY·W with dequantization fused: W is unpacked a tile of rows at a time into a small buffer
/// (<see cref="TileValues"/> floats) that the packed SGEMM multiplies, so no dense copy of W is ever made.
/// Every scheme only picks a group's scale, zero and code range; rounding is then the same for all: to the nearest
/// code, or stochastic. Arithmetic is written as the CUDA kernels write it (sums in group order, fused multiply-adds spelled out), so
/// both give the same codes.
/// </summary>
internal static unsafe class QuantKernels
{
    /// <summary>Floats of one dequantized tile of rows (512 KiB: a few rows of the widest layers, in L2).</summary>
    private const int TileValues = 128 * 1024;

    /// <summary>Codes and scales of <paramref name="q"/> from dense row-major values.</summary>
    public static void Quantize(in QuantView q, float* dense, in QuantizeArgs a)
    {
        var (w, args) = (q, a);
        System.Runtime.InteropServices.NativeMemory.Clear((void*)w.Codes, (nuint)w.CodeBytes);   // codes are OR-ed in; unused bits stay 0
        // Eight groups hold 8·group·bits bits, a whole number of bytes: chunks of eight never share a code byte.
        var chunks = (w.Groups + 7) / 8;
        StridedLoop.ForRows(chunks, 8L * w.Group, (c0, c1) =>
        {
            for (var g = c0 * 8; g < Math.Min(c1 * 8, w.Groups); g++)
                QuantizeGroup(w, dense, g, args);
        });
    }

    private static void QuantizeGroup(in QuantView q, float* dense, long g, in QuantizeArgs a)
    {
        var n = q.Group;
        var x = dense + g * n;
        var levels = (1 << q.Bits) - 1;
        float scale, zero;
        int lo = 0, hi = levels;
        switch (a.Scheme)
        {
            case QuantScheme.Symmetric:
            {
                var qmax = (1 << (q.Bits - 1)) - 1;
                var absmax = 0f;
                for (var i = 0; i < n; i++)
                    absmax = MathF.Max(absmax, MathF.Abs(x[i]));
                (scale, zero, lo, hi) = (absmax / qmax, 1 << (q.Bits - 1), (1 << (q.Bits - 1)) - qmax, (1 << (q.Bits - 1)) + qmax);
                break;
            }
            case QuantScheme.Asymmetric:
            {
                float min = x[0], max = x[0];
                for (var i = 1; i < n; i++)
                    (min, max) = (MathF.Min(min, x[i]), MathF.Max(max, x[i]));
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
        var stream = new PhiloxStream(a.Seed);
        for (var i = 0; i < n; i++)
        {
            var index = g * n + i;
            var u = a.Stochastic ? stream.Uniform(a.Offset + (ulong)index) : 0.5f;
            var code = Math.Clamp((int)MathF.Floor(MathF.FusedMultiplyAdd(x[i], inv, zero) + u), lo, hi);
            var bit = index * q.Bits;
            codes[bit >> 3] |= (byte)(code << (int)(bit & 7));
        }
    }

    /// <summary>Dense row-major values of <paramref name="q"/>.</summary>
    public static void Dequantize(in QuantView q, float* dense)
    {
        var w = q;
        StridedLoop.ForRows(w.Rows, w.Cols, (r0, r1) => DequantizeRows(w, (int)r0, (int)r1, dense + r0 * w.Cols));
    }

    /// <summary>Rows r0 .. r1 of <paramref name="q"/> into <paramref name="dst"/> (row-major, Cols per row).</summary>
    private static void DequantizeRows(in QuantView q, int r0, int r1, float* dst)
    {
        var codes = (byte*)q.Codes;
        var scales = (QuantScale*)q.Scales;
        var mask = (1 << q.Bits) - 1;
        var first = (long)r0 * q.Cols;
        var count = (long)(r1 - r0) * q.Cols;
        for (long k = 0; k < count; k++)
        {
            var i = first + k;
            var bit = i * q.Bits;
            var code = (codes[bit >> 3] >> (int)(bit & 7)) & mask;
            var s = scales[i / q.Group];
            dst[k] = s.Scale * (code - s.Zero);
        }
    }

    /// <summary>y [batch, Rows] = x [batch, Cols] · Wᵀ (transposed) or y [batch, Cols] = x [batch, Rows] · W, over
    /// tiles of W's rows dequantized one at a time.</summary>
    public static void MatMul(in QuantView q, bool transposed, int batch, float* x, float* y)
    {
        var tileRows = Math.Clamp(TileValues / q.Cols, 1, q.Rows);
        var tile = (float*)NativeMemory.AlignedAlloc((nuint)((long)tileRows * q.Cols * sizeof(float)), 64);
        try
        {
            for (var r0 = 0; r0 < q.Rows; r0 += tileRows)
            {
                var rows = Math.Min(tileRows, q.Rows - r0);
                DequantizeRows(q, r0, r0 + rows, tile);
                if (transposed)   // y[:, r0 .. r0 + rows] = x · tileᵀ
                    Gemm.Sgemm(false, true, batch, rows, q.Cols, 1, x, q.Cols, tile, q.Cols, 0, y + r0, q.Rows);
                else              // y += x[:, r0 .. r0 + rows] · tile
                    Gemm.Sgemm(false, false, batch, q.Cols, rows, 1, x + r0, q.Rows, tile, q.Cols, r0 == 0 ? 0 : 1, y, q.Cols);
            }
        }
        finally
        {
            NativeMemory.AlignedFree(tile);
        }
    }
}
