using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Frugal.Bench;

/// <summary>Aligned host buffers and best-of timing for the runners that call CPU kernels directly.</summary>
internal static unsafe class HostBuffers
{
    /// <summary>n floats, 64-byte aligned, uniform in [-0.5, 0.5) from <paramref name="rng"/> or zeros; free with NativeMemory.AlignedFree.</summary>
    public static float* Alloc(long n, Random? rng)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(n * sizeof(float)), 64);
        for (long i = 0; i < n; i++)
            p[i] = rng is null ? 0 : (float)(rng.NextDouble() - 0.5);
        return p;
    }

    /// <summary>Best milliseconds of <paramref name="body"/> over up to 10 runs (at least 0.3 s) after 2 warm-ups.</summary>
    public static double Time(Action body)
    {
        body();
        body();
        var best = double.MaxValue;
        var total = Stopwatch.StartNew();
        for (var i = 0; i < 10 && (i < 3 || total.Elapsed.TotalSeconds < 0.3); i++)
        {
            var sw = Stopwatch.StartNew();
            body();
            best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
        }
        return best;
    }
}
