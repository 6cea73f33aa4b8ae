using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Frugal.Backends;
using Frugal.Backends.Cuda;
using Frugal.Models;

namespace Frugal.Bench;

/// <summary><c>bench gpu [--peer FILE]</c>: GEMM TFLOP/s (F32, TF32, BF16 at 1024–8192), memory-bound ops in GB/s,
/// a layer's sparse products (CSR through cuSPARSE, BSR16 through the block kernels) against the dense GEMMs at
/// densities 1–50%, and MLP/CNN training steps on cuda:0, each beside PyTorch's number from <c>bench/torch/peers.py</c>'s JSON
/// (same shapes, same device) when given. Without a GPU it says why and exits 0.</summary>
public static class GpuBench
{
    private static readonly int[] GemmSizes = [1024, 2048, 4096, 8192];

    public static int Run(string[] args)
    {
        var status = Device.CudaStatus;
        Console.WriteLine(status);
        if (!status.Available)
            return 0;
        var peerFile = args.SkipWhile(a => a != "--peer").Skip(1).FirstOrDefault();
        var peer = peerFile is not null && File.Exists(peerFile)
            ? JsonSerializer.Deserialize<Dictionary<string, double>>(File.ReadAllText(peerFile)) ?? []
            : [];
        Console.WriteLine(peer.Count > 0 ? $"peer: PyTorch numbers from {peerFile}" : "peer: none (PyTorch not run)");
        var gpu = Device.Cuda(0);

        Console.WriteLine();
        Console.WriteLine("| GEMM n×n·n×n | dtype | Frugal TFLOP/s | torch TFLOP/s | Frugal / torch |");
        Console.WriteLine("|---:|---|---:|---:|---:|");
        foreach (var n in GemmSizes)
        {
            foreach (var kind in new[] { "f32", "tf32", "bf16" })
            {
                var seconds = TimeGemm(gpu, n, kind);
                Row($"| {n} | {kind} | ", 2.0 * n * n * n / seconds / 1e12, peer, $"gemm-{kind}-{n}");
            }
        }

        Console.WriteLine();
        Console.WriteLine("| op | shape | Frugal GB/s | torch GB/s | Frugal / torch |");
        Console.WriteLine("|---|---|---:|---:|---:|");
        const int rows = 8192, cols = 8192;
        var bytes = 4.0 * rows * cols;
        using (var a = Tensor.Uniform(new Shape(rows, cols), -1, 1, 1, device: gpu))
        using (var b = Tensor.Uniform(new Shape(rows, cols), -1, 1, 2, device: gpu))
        using (var gamma = Tensor.Ones(new Shape(cols), device: gpu))
        using (var beta = Tensor.Zeros(new Shape(cols), device: gpu))
        {
            Row("| add | [8192, 8192] f32 | ", 3 * bytes / Time(() => F.Add(a, b)) / 1e9, peer, "add");
            Row("| softmax | [8192, 8192] f32 | ", 2 * bytes / Time(() => F.Softmax(a, 1)) / 1e9, peer, "softmax");
            Row("| layernorm | [8192, 8192] f32 | ", 2 * bytes / Time(() => F.LayerNorm(a, gamma, beta)) / 1e9, peer, "layernorm");
        }

        SparseProducts(gpu);
        QuantizedProducts(gpu);

        Console.WriteLine();
        Console.WriteLine("| training step, batch 128, Adam | Frugal ms/step | torch ms/step | torch / Frugal |");
        Console.WriteLine("|---|---:|---:|---:|");
        var data = EmbeddedData.FashionMnistSlice();
        foreach (var model in new[] { "mlp", "cnn" })
        {
            var ms = TrainBench.MsPerStep(model, data.Train, 200, gpu).Ms;
            var torch = peer.GetValueOrDefault($"train-{model}-ms");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {model} | {ms:F3} | {(torch > 0 ? torch.ToString("F3", CultureInfo.InvariantCulture) : "-")} | {(torch > 0 ? (torch / ms).ToString("F2", CultureInfo.InvariantCulture) : "-")} |"));
        }
        return 0;
    }

    /// <summary>A linear layer's three products at batch 128 (forward Yᵀ = W·Xᵀ, input gradient Wᵀ·dYᵀ, SDDMM weight
    /// gradient) with W n×n sparse, beside the dense F32 GEMMs of the same shapes, in ms and as ratios.</summary>
    private static void SparseProducts(Device gpu)
    {
        const int batch = 128;
        Console.WriteLine();
        Console.WriteLine("| W n×n, batch 128 | format | density | dense fwd ms | sparse fwd ms | ×dense | sparse dX ms | ×dense | SDDMM dW ms | ×dense |");
        Console.WriteLine("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var n in new[] { 1024, 4096 })
        {
            using var w = Tensor.Uniform(new Shape(n, n), -1, 1, 5, device: gpu);
            using var xT = Tensor.Uniform(new Shape(n, batch), -1, 1, 6, device: gpu);
            using var yT = Tensor.Empty(new Shape(n, batch), device: gpu);
            using var dw = Tensor.Empty(new Shape(n, n), device: gpu);
            var dense = PerLaunch(yT, () => gpu.Backend.Gemm(new GemmArgs(false, false, 1, n, batch, n, 1, n, 0, batch, 0, 0, batch, 0), DType.F32, w.View.Data, xT.View.Data, yT.View.Data));
            var denseDw = PerLaunch(dw, () => gpu.Backend.Gemm(new GemmArgs(false, true, 1, n, n, batch, 1, batch, 0, batch, 0, 0, n, 0), DType.F32, yT.View.Data, xT.View.Data, dw.View.Data));
            foreach (var block in new[] { 1, 16 })
            {
                foreach (var density in new[] { 0.01, 0.05, 0.1, 0.2, 0.5 })
                {
                    var pattern = Formats.CsrPattern.Random(n / block, n / block, density, n + block);
                    using var rowPtr = Tensor.FromArray(pattern.RowPtr.ToArray(), new Shape(pattern.Rows + 1), gpu);
                    using var colIdx = Tensor.FromArray(pattern.ColIdx.ToArray(), new Shape(pattern.Nnz), gpu);
                    using var values = Tensor.Uniform(new Shape(pattern.Nnz * block * block), -1, 1, 7, device: gpu);
                    using var dValues = Tensor.Empty(values.Shape, device: gpu);
                    var view = new CsrView(pattern.Rows, pattern.Cols, pattern.Nnz, rowPtr.View.Data, colIdx.View.Data, values.View.Data, block);
                    var fwd = PerLaunch(yT, () => gpu.Backend.CsrMultiplyTransposed(view, xT.View, yT.View));
                    var dx = PerLaunch(yT, () => gpu.Backend.CsrMultiply(view, xT.View, yT.View));
                    var sddmm = PerLaunch(dValues, () => gpu.Backend.CsrSampledGradient(view, yT.View, xT.View, dValues.View));
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {n} | {(block == 1 ? "csr (cuSPARSE)" : "bsr16 (kernel)")} | {density:P0} | {dense * 1e3:F3} | {fwd * 1e3:F3} | {fwd / dense:F2} | {dx * 1e3:F3} | {dx / dense:F2} | {sddmm * 1e3:F3} | {sddmm / denseDw:F2} |"));
                }
            }
        }
    }

    /// <summary>A linear layer's two weight products at batch 128 (forward X·Wᵀ, input gradient dY·W) with W n×n in
    /// packed codes, dequantization fused (the NVRTC kernel), beside the dense F32 GEMMs, and the time of a stochastic
    /// requantization of W (what a master-free step adds).</summary>
    private static void QuantizedProducts(Device gpu)
    {
        const int batch = 128;
        Console.WriteLine();
        Console.WriteLine("| W n×n, batch 128 | bits | group | dense fwd ms | fused fwd ms | ×dense | fused dX ms | ×dense | quantize ms |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var n in new[] { 1024, 4096 })
        {
            using var w = Tensor.Uniform(new Shape(n, n), -1, 1, 5, device: gpu);
            using var x = Tensor.Uniform(new Shape(batch, n), -1, 1, 6, device: gpu);
            using var y = Tensor.Empty(new Shape(batch, n), device: gpu);
            var dense = PerLaunch(y, () => gpu.Backend.Gemm(new GemmArgs(false, true, 1, batch, n, n, 1, n, 0, n, 0, 0, n, 0), DType.F32, x.View.Data, w.View.Data, y.View.Data));
            foreach (var bits in new[] { 8, 4, 1 })
            {
                foreach (var group in new[] { 64, 0 })
                {
                    var q = F.Quantize(w, Formats.TensorFormat.Quantized(bits, group));
                    try
                    {
                        var view = q.View;
                        ulong draws = 0;
                        var fwd = PerLaunch(y, () => gpu.Backend.QuantMatMul(view, true, x.View, y.View));
                        var dx = PerLaunch(y, () => gpu.Backend.QuantMatMul(view, false, x.View, y.View));
                        var quantize = PerLaunch(q.Scales, () => gpu.Backend.Quantize(view, w.View, new QuantizeArgs(q.Format.Scheme, true, 1, draws += (ulong)n * (ulong)n)));
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"| {n} | {bits} | {(group == 0 ? "row" : group)} | {dense * 1e3:F3} | {fwd * 1e3:F3} | {fwd / dense:F2} | {dx * 1e3:F3} | {dx / dense:F2} | {quantize * 1e3:F3} |"));
                    }
                    finally
                    {
                        q.DisposeParts();
                    }
                }
            }
        }
    }

    /// <summary>Seconds of one launch of <paramref name="launch"/>: ten launches timed together (the clock closed by a
    /// host read of <paramref name="result"/>), divided by ten.</summary>
    private static double PerLaunch(Tensor result, Action launch) => Time(() =>
    {
        for (var i = 0; i < 10; i++)
            launch();
        return result.Alias();
    }) / 10;

    private static void Row(string head, double ours, Dictionary<string, double> peer, string key)
    {
        var theirs = peer.GetValueOrDefault(key);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{head}{ours:F2} | {(theirs > 0 ? theirs.ToString("F2", CultureInfo.InvariantCulture) : "-")} | {(theirs > 0 ? (ours / theirs).ToString("F2", CultureInfo.InvariantCulture) : "-")} |"));
    }

    /// <summary>Best seconds of one product (after warm-up), timed over a batch of launches closed by a host read.</summary>
    private static double TimeGemm(Device gpu, int n, string kind)
    {
        var dtype = kind == "bf16" ? DType.BF16 : DType.F32;
        using var a32 = Tensor.Uniform(new Shape(n, n), -1, 1, 3, device: gpu);
        using var b32 = Tensor.Uniform(new Shape(n, n), -1, 1, 4, device: gpu);
        using var a = a32.To(dtype);
        using var b = b32.To(dtype);
        using var c = Tensor.Empty(new Shape(n, n), dtype, gpu);
        var args = new GemmArgs(false, false, 1, n, n, n, 1, n, 0, n, 0, 0, n, 0);
        CudaBackend.AllowTf32 = kind == "tf32";
        try
        {
            var reps = Math.Max(3, (int)(2e11 / (2.0 * n * n * n)));
            return Time(() =>
            {
                for (var i = 0; i < reps; i++)
                    gpu.Backend.Gemm(args, dtype, a.View.Data, b.View.Data, c.View.Data);
                return c.Alias();
            }) / reps;
        }
        finally
        {
            CudaBackend.AllowTf32 = false;
        }
    }

    /// <summary>Best of 10 timed runs of <paramref name="op"/> after 3 warm-ups; the result's first element is read
    /// back each time, so queued GPU work is inside the clock.</summary>
    private static double Time(Func<Tensor> op)
    {
        var best = double.MaxValue;
        for (var i = 0; i < 13; i++)
        {
            var sw = Stopwatch.StartNew();
            using (var result = op())
            using (var flat = F.Flatten(result))
            using (var first = flat.Narrow(0, 0, 1))
                first.Item();
            if (i >= 3)
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return best;
    }
}
