using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Frugal.Backends.Cpu;
using Frugal.Formats;

namespace Frugal.Bench;

/// <summary><c>bench spmm [--block b] [n ...]</c>: a linear layer's three products at batch 128 with a CSR weight
/// n×n (or BSR with b×b blocks) of density 1–50% (forward SpMM, input-gradient SpMM, SDDMM weight gradient, on batch-minor activations) against
/// the dense SGEMMs, on the CPU; prints times, ratios and the break-even density of each product (where sparse
/// and dense take equal time). The transposes a layer adds around the sparse products are not included.</summary>
public static unsafe class SpmmBench
{
    private const int Batch = 128;
    private static readonly double[] Densities = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

    public static int Run(string[] args)
    {
        var at = Array.IndexOf(args, "--block");
        var block = at >= 0 && at + 1 < args.Length ? int.Parse(args[at + 1], CultureInfo.InvariantCulture) : 1;
        var sizes = args.Where((a, i) => !a.StartsWith('-') && (at < 0 || i != at + 1)).Select(int.Parse).ToArray();
        if (sizes.Length == 0)
            sizes = [512, 1024, 2048, 4096, 8192];
        var format = block == 1 ? "CSR" : $"BSR{block}";
        Console.WriteLine($"CPU, {Environment.ProcessorCount} cores; X [{Batch}, n], W [n, n] {format}; best of several runs after warm-up");
        Console.WriteLine();
        Console.WriteLine($"| n | density | dense fwd ms | {format} fwd ms | ×dense | dense dX ms | {format} dX ms | ×dense | dense dW ms | SDDMM dW ms | ×dense |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        // One silent pass first: the kernels' generic vector code and the thread pool reach steady state (tier-1
        // JIT) only after a second or so, which would otherwise land on the first size measured.
        Measure(512, block, print: false);
        var breakEven = new List<string>();
        foreach (var n in sizes)
            breakEven.Add(Measure(n, block, print: true));
        Console.WriteLine();
        Console.WriteLine("Break-even density (sparse as fast as dense), interpolated: " + string.Join("; ", breakEven));
        return 0;
    }

    private static string Measure(int n, int block, bool print)
    {
        var rng = new Random(n);
        var x = HostBuffers.Alloc((long)Batch * n, rng);
        var dy = HostBuffers.Alloc((long)Batch * n, rng);
        var w = HostBuffers.Alloc((long)n * n, rng);
        var outBuf = HostBuffers.Alloc((long)Batch * n, null);
        var dw = HostBuffers.Alloc((long)n * n, null);
        var xT = HostBuffers.Alloc((long)Batch * n, rng);
        var dyT = HostBuffers.Alloc((long)Batch * n, rng);
        try
        {
            var denseFwd = HostBuffers.Time(() => Gemm.Sgemm(false, true, Batch, n, n, 1, x, n, w, n, 0, outBuf, n));
            var denseDx = HostBuffers.Time(() => Gemm.Sgemm(false, false, Batch, n, n, 1, dy, n, w, n, 0, outBuf, n));
            var denseDw = HostBuffers.Time(() => Gemm.Sgemm(true, false, n, n, Batch, 1, dy, n, x, n, 0, dw, n));
            var ratios = new List<(double Density, double Fwd, double Dx, double Dw)>();
            foreach (var density in Densities)
            {
                var pattern = CsrPattern.Random(n / block, n / block, density, rng.Next());
                var (rowPtr, colIdx) = (pattern.RowPtr.ToArray(), pattern.ColIdx.ToArray());
                var values = Enumerable.Range(0, pattern.Nnz * block * block).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
                fixed (int* rp = rowPtr, ci = colIdx)
                fixed (float* v = values)
                {
                    var view = new Backends.CsrView(n / block, n / block, pattern.Nnz, (nint)rp, (nint)ci, (nint)v, block);
                    var dValues = new float[values.Length];
                    fixed (float* dv = dValues)
                    {
                        var pdv = dv;
                        var fwd = HostBuffers.Time(() => CsrKernels.MultiplyTransposed(view, Batch, xT, outBuf));
                        var dx = HostBuffers.Time(() => CsrKernels.Multiply(view, Batch, dyT, outBuf));
                        var sddmm = HostBuffers.Time(() => CsrKernels.SampledGradient(view, Batch, dyT, xT, pdv));
                        ratios.Add((density, fwd / denseFwd, dx / denseDx, sddmm / denseDw));
                        if (print)
                            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"| {n} | {density:P0} | {denseFwd:F3} | {fwd:F3} | {fwd / denseFwd:F2} | {denseDx:F3} | {dx:F3} | {dx / denseDx:F2} | {denseDw:F3} | {sddmm:F3} | {sddmm / denseDw:F2} |"));
                    }
                }
            }
            return string.Create(CultureInfo.InvariantCulture,
                $"n={n}: fwd {BreakEven(ratios, r => r.Fwd)}, dX {BreakEven(ratios, r => r.Dx)}, dW {BreakEven(ratios, r => r.Dw)}");
        }
        finally
        {
            foreach (var p in new[] { x, dy, w, outBuf, dw, xT, dyT })
                NativeMemory.AlignedFree(p);
        }
    }

    /// <summary>The density where the sparse/dense time ratio crosses 1, interpolated between measured densities.</summary>
    private static string BreakEven(List<(double Density, double Fwd, double Dx, double Dw)> rows, Func<(double Density, double Fwd, double Dx, double Dw), double> ratio)
    {
        for (var i = 1; i < rows.Count; i++)
        {
            double r0 = ratio(rows[i - 1]), r1 = ratio(rows[i]);
            if (r0 <= 1 && r1 > 1)
            {
                var d = rows[i - 1].Density + (1 - r0) / (r1 - r0) * (rows[i].Density - rows[i - 1].Density);
                return string.Create(CultureInfo.InvariantCulture, $"{d:P1}");
            }
        }
        return ratio(rows[0]) > 1 ? $"below {rows[0].Density:P0}" : $"above {rows[^1].Density:P0}";
    }
}
