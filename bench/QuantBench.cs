using System.Globalization;
using System.Runtime.InteropServices;
using Frugal.Backends;
using Frugal.Backends.Cpu;
using Frugal.Formats;

namespace Frugal.Bench;

/// <summary><c>bench quant [n ...]</c>: a linear layer's two weight products at batch 128, X·Wᵀ (forward) and dY·W
/// (input gradient), with W n×n dense F32 against packed low-bit codes with dequantization fused in the product (the
/// CPU kernel: a tile of rows unpacked at a time into the packed SGEMM), for 8, 4, 2 and 1 bits and groups of 32, 64,
/// 128 and a row; plus the time of quantizing W with stochastic rounding (what a master-free step adds).</summary>
public static unsafe class QuantBench
{
    private const int Batch = 128;

    public static int Run(string[] args)
    {
        var sizes = args.Select(a => int.Parse(a, CultureInfo.InvariantCulture)).ToArray();
        if (sizes.Length == 0)
            sizes = [1024, 4096];
        Console.WriteLine($"CPU, {Environment.ProcessorCount} cores; X [{Batch}, n], W [n, n]; best of several runs after warm-up");
        Console.WriteLine();
        Console.WriteLine("| n | bits | group | weight bytes ×dense | X·Wᵀ dense ms | fused ms | ×dense | dY·W dense ms | fused ms | ×dense | quantize (stochastic) ms |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var n in sizes)
            Measure(n);
        return 0;
    }

    private static void Measure(int n)
    {
        var rng = new Random(n);
        var x = HostBuffers.Alloc((long)Batch * n, rng);
        var w = HostBuffers.Alloc((long)n * n, rng);
        var y = HostBuffers.Alloc((long)Batch * n, null);
        try
        {
            var forward = HostBuffers.Time(() => Gemm.Sgemm(false, true, Batch, n, n, 1, x, n, w, n, 0, y, n));
            var backward = HostBuffers.Time(() => Gemm.Sgemm(false, false, Batch, n, n, 1, x, n, w, n, 0, y, n));
            foreach (var bits in new[] { 8, 4, 2, 1 })
            {
                foreach (var group in new[] { 32, 64, 128, 0 })
                {
                    var format = TensorFormat.Quantized(bits, group);
                    var g = format.GroupFor(n, n);
                    var codes = (byte*)NativeMemory.AlignedAlloc((nuint)format.CodeBytes(n, n), 64);
                    var scales = (QuantScale*)NativeMemory.AlignedAlloc((nuint)((long)n * n / g * sizeof(QuantScale)), 64);
                    try
                    {
                        var view = new QuantView(n, n, bits, g, (nint)codes, (nint)scales);
                        ulong draws = 0;
                        var quantize = HostBuffers.Time(() => QuantKernels.Quantize(view, w, new QuantizeArgs(format.Scheme, true, 1, draws += (ulong)n * (ulong)n)));
                        var fused = HostBuffers.Time(() => QuantKernels.MatMul(view, true, Batch, x, y));
                        var fusedBack = HostBuffers.Time(() => QuantKernels.MatMul(view, false, Batch, x, y));
                        var bytes = format.StorageBytes(n, n, (long)n * n, DType.F32).Values.Sum() / (4.0 * n * n);
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"| {n} | {bits} | {(group == 0 ? "row" : group)} | {bytes:F3} | {forward:F2} | {fused:F2} | {fused / forward:F2} | {backward:F2} | {fusedBack:F2} | {fusedBack / backward:F2} | {quantize:F2} |"));
                    }
                    finally
                    {
                        NativeMemory.AlignedFree(codes);
                        NativeMemory.AlignedFree(scales);
                    }
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(x);
            NativeMemory.AlignedFree(w);
            NativeMemory.AlignedFree(y);
        }
    }
}
