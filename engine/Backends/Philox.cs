using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Frugal.Backends;

/// <summary>Philox-4x32-10, the counter-based generator of Salmon et al. (2011): random numbers are a pure
/// function of (seed, counter), so any thread or device produces the same value for the same element.
/// The CUDA kernels implement the same function; this is the reference.</summary>
public static class Philox
{
    private const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85;

    /// <summary>The four 32-bit outputs for a 128-bit counter (c0..c3) and a 64-bit key.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (uint, uint, uint, uint) Block(ulong counter, ulong hiCounter, ulong key)
    {
        uint c0 = (uint)counter, c1 = (uint)(counter >> 32), c2 = (uint)hiCounter, c3 = (uint)(hiCounter >> 32);
        uint k0 = (uint)key, k1 = (uint)(key >> 32);
        for (var r = 0; r < 10; r++)
        {
            var p0 = (ulong)M0 * c0;
            var p1 = (ulong)M1 * c2;
            var n0 = (uint)(p1 >> 32) ^ c1 ^ k0;
            var n2 = (uint)(p0 >> 32) ^ c3 ^ k1;
            c1 = (uint)p1;
            c3 = (uint)p0;
            c0 = n0;
            c2 = n2;
            k0 += W0;
            k1 += W1;
        }
        return (c0, c1, c2, c3);
    }

    /// <summary>Uniform [0, 1) for element index <paramref name="index"/> of stream <paramref name="seed"/>
    /// (24 random bits, exact in float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Uniform(ulong seed, ulong index) => new PhiloxStream(seed).Uniform(index);

    /// <summary>The stochastic rounding offset of element <paramref name="index"/> of stream <paramref name="seed"/>:
    /// uniform in [0, 1) with 16 random bits, so one block serves eight elements. Element i of the 32 elements
    /// 32q .. 32q + 31 takes half (i / 16) % 2 (low 16 bits first) of word (i / 4) % 4 of block 4q + i % 4: the order
    /// in which four blocks computed side by side in vector lanes (<see cref="RoundingOffsets"/>) hold them.
    /// Sixteen bits are what rounding can use: t + u for a code t ≥ 128 keeps 2^-16 of u in F32.</summary>
    public static float RoundingOffset(ulong seed, ulong index)
    {
        var (w0, w1, w2, w3) = Block((index >> 5) * 4 + (index & 3), 0, seed);
        var word = ((index >> 2) & 3) switch { 0 => w0, 1 => w1, 2 => w2, _ => w3 };
        return ((word >> (int)(16 * ((index >> 4) & 1))) & 0xFFFF) * (1.0f / 65536.0f);
    }

    /// <summary><see cref="RoundingOffset"/> for the consecutive indices <paramref name="first"/> ... into
    /// <paramref name="dst"/>: the same values, 32 at a time from four blocks in vector lanes where the hardware has
    /// them (a run that starts or ends inside 32 takes its part of that 32).</summary>
    [SkipLocalsInit]   // a partial run's 32 values are written before they are read
    public static unsafe void RoundingOffsets(ulong seed, ulong first, Span<float> dst)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            for (var i = 0; i < dst.Length; i++)
                dst[i] = RoundingOffset(seed, first + (ulong)i);
            return;
        }
        var part = stackalloc float[32];
        for (var i = 0; i < dst.Length;)
        {
            var index = first + (ulong)i;
            var (window, skip) = (index >> 5, (int)(index & 31));
            var take = Math.Min(32 - skip, dst.Length - i);
            if (take == 32)
            {
                fixed (float* d = dst.Slice(i, 32))
                    FourBlocks(window * 4, seed, d);
            }
            else
            {
                FourBlocks(window * 4, seed, part);
                new ReadOnlySpan<float>(part + skip, take).CopyTo(dst.Slice(i, take));
            }
            i += take;
        }
    }

    /// <summary>Blocks block .. block + 3 (counter high word 0), each 32-bit word in a 64-bit lane so a lane's
    /// product is the full 32 × 32 → 64-bit one, as <see cref="Block"/> computes; their 32 rounding offsets in
    /// order (the low halves of words 0 .. 3 of the four blocks, then the high halves).</summary>
    private static unsafe void FourBlocks(ulong block, ulong key, float* dst)
    {
        var low = Vector256.Create(0xFFFFFFFFul);
        var counters = Vector256.Create(block, block + 1, block + 2, block + 3);
        Vector256<ulong> c0 = counters & low, c1 = counters >>> 32, c2 = Vector256<ulong>.Zero, c3 = Vector256<ulong>.Zero;
        uint k0 = (uint)key, k1 = (uint)(key >> 32);
        Vector256<ulong> m0 = Vector256.Create((ulong)M0), m1 = Vector256.Create((ulong)M1);
        for (var r = 0; r < 10; r++)
        {
            var p0 = Multiply(m0, c0);
            var p1 = Multiply(m1, c2);
            var n0 = (p1 >>> 32) ^ c1 ^ Vector256.Create((ulong)k0);
            var n2 = (p0 >>> 32) ^ c3 ^ Vector256.Create((ulong)k1);
            c1 = p1 & low;
            c3 = p0 & low;
            c0 = n0;
            c2 = n2;
            k0 += W0;
            k1 += W1;
        }
        // Words 0 and 1 of the four blocks, then 2 and 3: each word's low 16 bits, then its high 16 bits.
        Vector256<uint> first = Vector256.Narrow(c0, c1), second = Vector256.Narrow(c2, c3), half = Vector256.Create(0xFFFFu);
        var scale = Vector256.Create(1.0f / 65536.0f);
        Vector256.Store(Vector256.ConvertToSingle((first & half).AsInt32()) * scale, dst);
        Vector256.Store(Vector256.ConvertToSingle((second & half).AsInt32()) * scale, dst + 8);
        Vector256.Store(Vector256.ConvertToSingle((first >>> 16).AsInt32()) * scale, dst + 16);
        Vector256.Store(Vector256.ConvertToSingle((second >>> 16).AsInt32()) * scale, dst + 24);
    }

    /// <summary>Lane products of 32-bit values held in 64-bit lanes: the full 64-bit products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<ulong> Multiply(Vector256<ulong> a, Vector256<ulong> b)
        => Avx2.IsSupported ? Avx2.Multiply(a.AsUInt32(), b.AsUInt32()) : a * b;

    /// <summary>Standard normal for element index <paramref name="index"/> (Box–Muller on one block per element).</summary>
    public static double Normal(ulong seed, ulong index)
    {
        var (a, b, _, _) = Block(index, 1, seed);
        var u1 = ((a >> 8) + 1.0) * (1.0 / 16777217.0);   // (0, 1]: log is finite
        var u2 = (b >> 8) * (1.0 / 16777216.0);
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}

/// <summary>Sequential reader of <see cref="Philox.Uniform"/> values that computes each 4-value block once
/// (same values, a quarter of the work when indices advance one by one).</summary>
public struct PhiloxStream(ulong seed)
{
    private ulong _block = ulong.MaxValue;
    private (uint, uint, uint, uint) _values;

    /// <summary>Equals <c>Philox.Uniform(seed, index)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Uniform(ulong index)
    {
        var block = index >> 2;
        if (block != _block)
        {
            _values = Philox.Block(block, 0, seed);
            _block = block;
        }
        var u = (index & 3) switch { 0 => _values.Item1, 1 => _values.Item2, 2 => _values.Item3, _ => _values.Item4 };
        return (u >> 8) * (1.0f / 16777216.0f);
    }
}
