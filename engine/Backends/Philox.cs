using System.Runtime.CompilerServices;

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
