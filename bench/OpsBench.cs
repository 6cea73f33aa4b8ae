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
        return 0;
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
        using var dx = Tensor.Empty(x.Shape);
        using var dw = Tensor.Empty(w.Shape);
        using var db = Tensor.Empty(b.Shape);
        Time("conv2d bwd input", shape, flops, () => x.Device.Backend.Conv2dBackwardInput(args, dy.View, w.View, dx.View));
        Time("conv2d bwd weight", shape, flops, () => x.Device.Backend.Conv2dBackwardWeight(args, x.View, dy.View, dw.View, db.View));
    }

    private static void Time(string op, string shape, double flops, Action body)
    {
        for (var i = 0; i < 3; i++)
            body();
        var best = double.MaxValue;
        for (var i = 0; i < 5; i++)
        {
            var sw = Stopwatch.StartNew();
            body();
            best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
        }
        var gf = flops > 0 ? (flops / best / 1e6).ToString("F1", CultureInfo.InvariantCulture) : "-";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {op} | {shape} | {best:F2} | {gf} |"));
    }
}
