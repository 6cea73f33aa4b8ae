using Frugal.Bench;

// Benchmark dispatcher: `dotnet run -c Release --project bench -- <runner> [args...]`.
// Add a runner by adding one entry to the table below.
var runners = new Dictionary<string, Func<string[], int>>(StringComparer.OrdinalIgnoreCase)
{
    ["sgemm"] = SgemmBench.Run,
    ["sgemm-bdn"] = SgemmBench.RunBenchmarkDotNet,
    ["train"] = TrainBench.Run,
    ["steps"] = InterleavedBench.Run,
    ["ops"] = OpsBench.Run,
    ["gpu"] = GpuBench.Run,
    ["spmm"] = SpmmBench.Run,
    ["lowrank"] = LowRankBench.Run,
    ["quant"] = QuantBench.Run,
    ["gpt"] = GptBench.Run,
};

if (args.Length == 0 || !runners.TryGetValue(args[0], out var runner))
{
    Console.Error.WriteLine($"usage: bench <runner> [args...]; runners: {string.Join(", ", runners.Keys)}");
    return args.Length == 0 ? 0 : 2;
}

return runner(args[1..]);
