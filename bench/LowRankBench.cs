using System.Globalization;
using System.Runtime.InteropServices;
using Frugal.Backends.Cpu;

namespace Frugal.Bench;

/// <summary><c>bench lowrank [n ...]</c>: a linear layer's three products at batch 128 with W n×n dense against the
/// low-rank layer's (W = U·Vᵀ of rank r: forward X·V then ·Uᵀ, input gradient dY·U then ·Vᵀ, weight gradients dYᵀ·(X·V)
/// and (dY·U)ᵀ·X), across ranks n/32 … n/2, on the CPU; prints times, ratios and the break-even rank.</summary>
public static unsafe class LowRankBench
{
    private const int Batch = 128;

    public static int Run(string[] args)
    {
        var sizes = args.Select(int.Parse).ToArray();
        if (sizes.Length == 0)
            sizes = [512, 1024, 2048, 4096];
        Console.WriteLine($"CPU, {Environment.ProcessorCount} cores; X [{Batch}, n], W [n, n] = U [n, r]·Vᵀ [r, n]; best of several runs after warm-up");
        Console.WriteLine();
        Console.WriteLine("| n | rank | values ×dense | dense step ms (fwd+dX+dW) | low-rank step ms | ×dense |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
        Measure(512, print: false);
        var breakEven = sizes.Select(n => Measure(n, print: true)).ToList();
        Console.WriteLine();
        Console.WriteLine("Break-even rank (low rank as fast as dense), interpolated: " + string.Join("; ", breakEven));
        return 0;
    }

    private static string Measure(int n, bool print)
    {
        var rng = new Random(n);
        var x = HostBuffers.Alloc((long)Batch * n, rng);
        var dy = HostBuffers.Alloc((long)Batch * n, rng);
        var w = HostBuffers.Alloc((long)n * n, rng);
        var o = HostBuffers.Alloc((long)Batch * n, null);
        var dw = HostBuffers.Alloc((long)n * n, null);
        var u = HostBuffers.Alloc((long)n * (n / 2), rng);
        var v = HostBuffers.Alloc((long)n * (n / 2), rng);
        var h = HostBuffers.Alloc((long)Batch * (n / 2), null);
        var du = HostBuffers.Alloc((long)n * (n / 2), null);
        try
        {
            var dense = HostBuffers.Time(() =>
            {
                Gemm.Sgemm(false, true, Batch, n, n, 1, x, n, w, n, 0, o, n);     // Y = X·Wᵀ
                Gemm.Sgemm(false, false, Batch, n, n, 1, dy, n, w, n, 0, o, n);    // dX = dY·W
                Gemm.Sgemm(true, false, n, n, Batch, 1, dy, n, x, n, 0, dw, n);    // dW = dYᵀ·X
            });
            var rows = new List<(int Rank, double Ratio)>();
            foreach (var r in new[] { n / 32, n / 16, n / 8, n / 4, n / 2 })
            {
                var low = HostBuffers.Time(() =>
                {
                    Gemm.Sgemm(false, false, Batch, r, n, 1, x, n, v, r, 0, h, r);     // H = X·V
                    Gemm.Sgemm(false, true, Batch, n, r, 1, h, r, u, r, 0, o, n);      // Y = H·Uᵀ
                    Gemm.Sgemm(true, false, n, r, Batch, 1, dy, n, h, r, 0, du, r);    // dU = dYᵀ·H
                    Gemm.Sgemm(false, false, Batch, r, n, 1, dy, n, u, r, 0, h, r);    // G = dY·U
                    Gemm.Sgemm(true, false, n, r, Batch, 1, x, n, h, r, 0, du, r);     // dV = Xᵀ·G
                    Gemm.Sgemm(false, true, Batch, n, r, 1, h, r, v, r, 0, o, n);      // dX = G·Vᵀ
                });
                rows.Add((r, low / dense));
                if (print)
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {n} | {r} | {2.0 * r / n:F3} | {dense:F3} | {low:F3} | {low / dense:F2} |"));
            }
            for (var i = 1; i < rows.Count; i++)
            {
                if (rows[i - 1].Ratio <= 1 && rows[i].Ratio > 1)
                {
                    var r = rows[i - 1].Rank + (1 - rows[i - 1].Ratio) / (rows[i].Ratio - rows[i - 1].Ratio) * (rows[i].Rank - rows[i - 1].Rank);
                    return string.Create(CultureInfo.InvariantCulture, $"n={n}: r ≈ {r:F0} ({r / n:P0} of n)");
                }
            }
            return rows[0].Ratio > 1 ? $"n={n}: slower already at r = {rows[0].Rank}" : $"n={n}: faster up to r = {rows[^1].Rank}";
        }
        finally
        {
            foreach (var p in new[] { x, dy, w, o, dw, u, v, h, du })
                NativeMemory.AlignedFree(p);
        }
    }
}
