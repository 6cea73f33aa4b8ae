using System.Diagnostics;
using System.Globalization;

namespace Frugal.Bench;

/// <summary>Per-op timings of the CNN's layers at batch 128 (forward and backward), to see where a step goes.</summary>
public static class OpsBench
{
    public static int Run(string[] args)
    {
        Console.WriteLine("| op | shape | ms | GFLOP/s |");
        Console.WriteLine("|---|---|---:|---:|");
        Conv(128, 1, 28, 32);
        Conv(128, 32, 14, 64);
        using var act = Tensor.Uniform(new Shape(128, 32, 28, 28), -1, 1, 1);
        act.RequiresGrad = true;
        Time("maxpool fwd+bwd", "[128,32,28,28]", 0, () =>
        {
            using var y = F.MaxPool2d(act, 2);
            using var s = F.Sum(y);
            s.Backward();
            act.Grad = null;
        });
        Time("relu fwd+bwd", "[128,32,28,28]", 0, () =>
        {
            using var y = act.Relu();
            using var s = F.Sum(y);
            s.Backward();
            act.Grad = null;
        });
        Time("uniform init", "[128,32,28,28]", 0, () =>
        {
            using var y = Tensor.Uniform(new Shape(128, 32, 28, 28), -1, 1, 1);
        });
        OptimizerStep("dense", 32);
        OptimizerStep("dense", 8);
        OptimizerStep("q8", 8);
        OptimizerStep("q4", 8);
        return 0;
    }

    /// <summary>One Adam step over the MLP's 669,706 parameters in <paramref name="format"/> with
    /// <paramref name="stateBits"/>-bit moments (a master-free quantized weight's update includes its dequantization
    /// and stochastic rounding), the same gradients every step.</summary>
    private static void OptimizerStep(string format, int stateBits)
    {
        Nn.Init.ManualSeed(1);
        using var model = Models.Zoo.Create("mlp", Device.Cpu, Formats.WeightFormat.Parse(format));
        using var opt = new Optim.Adam(model.Parameters(), 1e-3, stateBits: stateBits);
        ulong seed = 7;
        foreach (var p in model.Parameters())
            p.Grad = Tensor.Uniform(p.GradShape, -1e-2, 1e-2, seed++);
        // The tiered JIT's optimized code first (these loops are short: the 3 warm-up calls of Time are not enough).
        for (var i = 0; i < 200; i++)
            opt.Step();
        Time($"adam step, {stateBits}-bit moments", $"mlp {format}", 0, opt.Step);
    }

    private static void Conv(int n, int c, int hw, int oc)
    {
        using var x = Tensor.Uniform(new Shape(n, c, hw, hw), -1, 1, 1);
        using var w = Tensor.Uniform(new Shape(oc, c, 3, 3), -1, 1, 2);
        using var b = Tensor.Uniform(new Shape(oc), -1, 1, 3);
        var flops = 2.0 * n * oc * hw * hw * c * 9;
        var shape = $"[{n},{c},{hw},{hw}]->{oc}";
        Time("conv2d fwd", shape, flops, () => { using var y = F.Conv2d(x, w, b, 1, 1); });
        using var dy = Tensor.Uniform(new Shape(n, oc, hw, hw), -1, 1, 4);
        var args = new Backends.Conv2dArgs(n, c, hw, hw, oc, 3, 3, 1, 1, 1, 1);
        // The GEMMs inside (one column chunk of the CPU backend): what im2col, col2im and the copies add.
        var cols = (int)Math.Min(n, Math.Max(1, (4L << 20) / (c * 9L * hw * hw))) * hw * hw;
        Gemm("gemm of fwd", false, false, oc, cols, c * 9, n * hw * hw / cols);
        Gemm("gemm of bwd input", true, false, c * 9, cols, oc, n * hw * hw / cols);
        Gemm("gemm of bwd weight", false, true, oc, c * 9, cols, n * hw * hw / cols);
        using var dx = Tensor.Empty(x.Shape);
        using var dw = Tensor.Empty(w.Shape);
        using var db = Tensor.Empty(b.Shape);
        Time("conv2d bwd input", shape, flops, () => x.Device.Backend.Conv2dBackwardInput(args, dy.View, w.View, dx.View));
        Time("conv2d bwd weight", shape, flops, () => x.Device.Backend.Conv2dBackwardWeight(args, x.View, dy.View, dw.View, db.View));
    }

    /// <summary>Times <paramref name="repeat"/> products op(A)·op(B) of m×k by k×n, as the convolution issues them.</summary>
    private static unsafe void Gemm(string op, bool ta, bool tb, int m, int n, int k, int repeat)
    {
        using var a = Tensor.Uniform(new Shape(m, k), -1, 1, 5);
        using var b = Tensor.Uniform(new Shape(k, n), -1, 1, 6);
        using var c = Tensor.Empty(new Shape(m, n));
        float* pa = (float*)a.View.Data, pb = (float*)b.View.Data, pc = (float*)c.View.Data;
        Time(op, $"{(ta ? "T" : "N")}{(tb ? "T" : "N")} {m}x{n}x{k} x{repeat}", 2.0 * m * n * k * repeat, () =>
        {
            for (var i = 0; i < repeat; i++)
                Backends.Cpu.Gemm.Sgemm(ta, tb, m, n, k, 1f, pa, ta ? m : k, pb, tb ? k : n, 0f, pc, n);
        });
    }

    private static void Time(string op, string shape, double flops, Action body)
    {
        for (var i = 0; i < 3; i++)
            body();
        // Best of 15: the machine is a shared VM, and a slow run says nothing about the code.
        var best = double.MaxValue;
        for (var i = 0; i < 15; i++)
        {
            var sw = Stopwatch.StartNew();
            body();
            best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
        }
        var gf = flops > 0 ? (flops / best / 1e6).ToString("F1", CultureInfo.InvariantCulture) : "-";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {op} | {shape} | {best:F2} | {gf} |"));
    }
}
