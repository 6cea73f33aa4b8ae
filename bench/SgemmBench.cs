using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Frugal.Backends.Cpu;

namespace Frugal.Bench;

/// <summary>
/// Square SGEMM throughput: <c>bench sgemm [n ...] [--threads]</c>. Prints a Markdown table of the best GFLOP/s
/// over several timed runs (after warm-up) and the share of the machine's theoretical fp32 peak.
/// </summary>
public static unsafe class SgemmBench
{
    private static readonly int[] DefaultSizes = [256, 1024, 2048];

    /// <summary>C = A·B for n×n row-major matrices.</summary>
    private delegate void Product(int n, float* a, float* b, float* c);

    public static int Run(string[] args)
    {
        var sizes = args.Where(a => !a.StartsWith('-')).Select(int.Parse).ToArray();
        if (sizes.Length == 0)
            sizes = DefaultSizes;

        var cores = Environment.ProcessorCount;
        using var openBlas = OpenBlas.TryLoad();
        var rows = new List<string>();
        // The clock is sampled before and after the timed products and the highest reading kept (another process
        // competing for a core can only make a reading lower), floored at the 2.6 GHz nominal clock, so that the
        // peak is never understated.
        var before = MeasureClockGhz();
        var results = sizes.Select(n => (
            N: n,
            All: Measure(n, (m, a, b, c) => Gemm.Sgemm(false, false, m, m, m, 1f, a, m, b, m, 0f, c, m)),
            One: Measure(n, (m, a, b, c) => Gemm.Run(GemmKernel.Auto, 1, false, false, m, m, m, 1f, a, m, b, m, 0f, c, m)),
            Peer: openBlas is null ? default : Measure(n, openBlas.Sgemm))).ToList();
        var after = MeasureClockGhz();
        var measured = Math.Max(Math.Max(before.Single, before.AllCores), Math.Max(after.Single, after.AllCores));
        var ghz = Math.Max(measured, NominalGhz);
        var fma = FmaWidth.Detect();
        var corePeak = fma.Units * fma.Lanes * 2 * ghz;
        var peak = cores * corePeak;

        Console.WriteLine($"kernel: {Gemm.BestKernel}, cores: {cores}");
        Console.WriteLine($"clock: dependent integer add/xor chain (1 cycle per op): one core {before.Single:F2} / "
            + $"{after.Single:F2} GHz, all {cores} cores at once {before.AllCores:F2} / {after.AllCores:F2} GHz "
            + $"(before / after); using {ghz:F2} GHz ({(measured >= NominalGhz ? "highest measured" : "nominal, above the measurements")})");
        Console.WriteLine($"FMA width: {fma.Why}");
        Console.WriteLine($"theoretical fp32 peak = {cores} cores x {fma.Units} FMA units x {fma.Lanes} lanes x 2 flops"
            + $" x {ghz:F2} GHz = {peak:F1} GFLOP/s ({corePeak:F1} per core)");
        Console.WriteLine(openBlas is null
            ? "peer: OpenBLAS not found (apt-get install libopenblas0 for a side-by-side column)"
            : $"peer: OpenBLAS {openBlas.Describe()}, same matrices, same timing loop");
        Console.WriteLine();
        Console.WriteLine("| n | Frugal GFLOP/s | % of peak | median | Frugal 1 thread | % of 1-core peak | OpenBLAS GFLOP/s | Frugal / OpenBLAS |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var (n, all, one, peer) in results)
        {
            var peerCols = peer.Best > 0 ? $"{peer.Best:F1} | {all.Best / peer.Best:F2}" : "- | -";
            Console.WriteLine($"| {n} | {all.Best:F1} | {100 * all.Best / peak:F1}% | {all.Median:F1} | {one.Best:F1} | "
                + $"{100 * one.Best / corePeak:F1}% | {peerCols} |");
        }
        return 0;
    }

    /// <summary>Best and median GFLOP/s of <paramref name="product"/> on n×n matrices (best after warm-up).</summary>
    private static (double Best, double Median) Measure(int n, Product product)
    {
        var elems = (nuint)n * (nuint)n;
        var a = (float*)NativeMemory.AlignedAlloc(elems * sizeof(float), 64);
        var b = (float*)NativeMemory.AlignedAlloc(elems * sizeof(float), 64);
        var c = (float*)NativeMemory.AlignedAlloc(elems * sizeof(float), 64);
        try
        {
            var rng = new Random(1);
            for (nuint i = 0; i < elems; i++)
            {
                a[i] = (float)(rng.NextDouble() - 0.5);
                b[i] = (float)(rng.NextDouble() - 0.5);
            }
            var flops = 2.0 * n * n * n;

            // Warm-up (JIT tiers, pack-buffer pool, thread pool), at least 1 s.
            var warm = Stopwatch.StartNew();
            var warmRuns = 0;
            while (warmRuns < 3 || warm.Elapsed.TotalSeconds < 1)
            {
                product(n, a, b, c);
                warmRuns++;
            }

            var times = new List<double>();
            var total = Stopwatch.StartNew();
            while (times.Count < 5 || (total.Elapsed.TotalSeconds < 2 && times.Count < 200))
            {
                var sw = Stopwatch.StartNew();
                product(n, a, b, c);
                times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            return (flops / times[0] / 1e9, flops / times[times.Count / 2] / 1e9);
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(b);
            NativeMemory.AlignedFree(c);
        }
    }

    private const double NominalGhz = 2.6;

    /// <summary>Core clock in GHz from chains of dependent 1-cycle integer ops (add, xor), timed on one core alone
    /// and on all cores at once (best of several rounds each).</summary>
    private static (double Single, double AllCores) MeasureClockGhz()
    {
        const long Iterations = 20_000_000;
        const int OpsPerIteration = 16;
        DependentChain(1_000_000);

        var single = double.MaxValue;
        for (var r = 0; r < 7; r++)
        {
            var sw = Stopwatch.StartNew();
            DependentChain(Iterations);
            single = Math.Min(single, sw.Elapsed.TotalSeconds);
        }

        var cores = Environment.ProcessorCount;
        var all = double.MaxValue;
        for (var r = 0; r < 5; r++)
        {
            var seconds = new double[cores];
            using var barrier = new Barrier(cores);
            var threads = new Thread[cores];
            for (var t = 0; t < cores; t++)
            {
                var id = t;
                threads[t] = new Thread(() =>
                {
                    barrier.SignalAndWait();
                    var sw = Stopwatch.StartNew();
                    DependentChain(Iterations);
                    seconds[id] = sw.Elapsed.TotalSeconds;
                });
                threads[t].Start();
            }
            foreach (var th in threads)
                th.Join();
            all = Math.Min(all, seconds.Max());
        }
        return (Iterations * OpsPerIteration / single / 1e9, Iterations * OpsPerIteration / all / 1e9);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static long DependentChain(long iterations)
    {
        long x = iterations, y = 0x1E3779B97F4A7C15L, z = 0x632BE59BD9B4E019L;
        for (long i = 0; i < iterations; i++)
        {
            x += y; x ^= z; x += y; x ^= z; x += y; x ^= z; x += y; x ^= z;
            x += y; x ^= z; x += y; x ^= z; x += y; x ^= z; x += y; x ^= z;
        }
        return x;
    }

    /// <summary><c>bench sgemm-bdn</c>: the same product under BenchmarkDotNet.</summary>
    public static int RunBenchmarkDotNet(string[] args)
    {
        BenchmarkRunner.Run<SgemmBenchmark>(args: args);
        return 0;
    }
}

/// <summary>BenchmarkDotNet view of one 1024 x 1024 SGEMM.</summary>
[MemoryDiagnoser]
public unsafe class SgemmBenchmark : IDisposable
{
    private float* _a, _b, _c;

    [Params(1024)]
    public int N { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var elems = (nuint)N * (nuint)N;
        _a = (float*)NativeMemory.AlignedAlloc(elems * sizeof(float), 64);
        _b = (float*)NativeMemory.AlignedAlloc(elems * sizeof(float), 64);
        _c = (float*)NativeMemory.AlignedAlloc(elems * sizeof(float), 64);
        var rng = new Random(1);
        for (nuint i = 0; i < elems; i++)
        {
            _a[i] = (float)(rng.NextDouble() - 0.5);
            _b[i] = (float)(rng.NextDouble() - 0.5);
        }
    }

    [Benchmark]
    public void Sgemm() => Gemm.Sgemm(false, false, N, N, N, 1f, _a, N, _b, N, 0f, _c, N);

    [GlobalCleanup]
    public void Dispose()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
        _a = _b = _c = null;
        GC.SuppressFinalize(this);
    }
}
