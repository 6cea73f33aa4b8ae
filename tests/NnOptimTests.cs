using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>Modules (names, modes, state dicts, init) and optimizers/schedules at the level users call them,
/// against float64 references of PyTorch's update rules.</summary>
public class NnOptimTests
{
    private static Tensor Leaf(double[] values, string name)
    {
        var t = Tensor.FromArray(values.Select(v => (float)v).ToArray(), new Shape(values.Length));
        t.RequiresGrad = true;
        t.Name = name;
        return t;
    }

    private static void SetGrad(Tensor p, double[] g) => p.Grad = Tensor.FromArray(g.Select(v => (float)v).ToArray(), p.Shape);

    private static double[] Values(Tensor t) => t.ToArray<float>().Select(v => (double)v).ToArray();

    [Fact]
    public void SequentialNamesParametersByPath()
    {
        Init.ManualSeed(1);
        using var mlp = Zoo.Mlp();
        Assert.Equal(["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"], mlp.NamedParameters().Select(p => p.Name));
        Assert.Equal(784L * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10, mlp.ParameterCount());
        Assert.All(mlp.NamedParameters(), p => Assert.Equal(p.Name, p.Parameter.Name));
        Assert.All(mlp.Parameters(), p => Assert.True(p.RequiresGrad));
    }

    [Fact]
    public void TrainAndEvalReachEveryChild_DropoutScalesInTrainingAndIsIdentityInEval()
    {
        using var model = new Sequential(new Flatten(), new Dropout(0.25), new ReLU());
        Assert.All(model.Children(), c => Assert.True(c.Training));
        using var scope = TensorScope.Begin();
        var x = Tensor.Ones(new Shape(64, 1000));
        Rng.ManualSeed(3);
        var kept = model.Forward(x).ToArray<float>();
        var zeros = kept.Count(v => v == 0);
        Assert.InRange(zeros / (double)kept.Length, 0.23, 0.27);
        Assert.All(kept.Where(v => v != 0), v => Assert.Equal(1 / 0.75f, v, 6));

        model.Eval();
        Assert.All(model.Children(), c => Assert.False(c.Training));
        Assert.All(model.Forward(x).ToArray<float>(), v => Assert.Equal(1f, v));
    }

    [Fact]
    public void StateDictRoundTripsAndRejectsMismatchesBeforeWritingAnything()
    {
        Init.ManualSeed(1);
        using var a = Zoo.Mlp(inputs: 6, hidden: 5, classes: 3);
        Init.ManualSeed(2);
        using var b = Zoo.Mlp(inputs: 6, hidden: 5, classes: 3);
        using var scope = TensorScope.Begin();
        var x = Tensor.Normal(new Shape(4, 6), 0, 1, 9);
        Assert.NotEqual(a.Forward(x).ToArray<float>(), b.Forward(x).ToArray<float>());

        b.LoadStateDict(a.StateDict());
        Assert.Equal(a.Forward(x).ToArray<float>(), b.Forward(x).ToArray<float>());

        Init.ManualSeed(3);
        using var c = Zoo.Mlp(inputs: 6, hidden: 5, classes: 3);
        var before = c.Parameters().Select(p => p.ToArray<float>()).ToList();
        using var wide = Zoo.Mlp(inputs: 6, hidden: 7, classes: 3);
        var shape = Assert.Throws<ShapeMismatchException>(() => c.LoadStateDict(wide.StateDict()));
        // The first tensor that does not fit is named, with both shapes: layer 1's bias, checked before its weight.
        Assert.Contains("'1.bias' must be f32 [5] but the saved state holds f32 [7]", shape.Message, StringComparison.Ordinal);
        var partial = a.StateDict().Where(kv => kv.Key != "5.bias").ToDictionary();
        var names = Assert.Throws<ArgumentException>(() => c.LoadStateDict(partial));
        Assert.Contains("missing [5.bias]", names.Message, StringComparison.Ordinal);
        Assert.Equal(before, c.Parameters().Select(p => p.ToArray<float>()).ToList());
    }

    [Fact]
    public void InitIsSeededAndWithinItsBounds()
    {
        float[] Draw(ulong seed, Func<Tensor> make)
        {
            Init.ManualSeed(seed);
            using var t = make();
            return t.ToArray<float>();
        }
        var shape = new Shape(256, 300);
        var kaiming = Draw(5, () => Init.KaimingUniform(shape, 300));
        Assert.Equal(kaiming, Draw(5, () => Init.KaimingUniform(shape, 300)));
        Assert.NotEqual(kaiming, Draw(6, () => Init.KaimingUniform(shape, 300)));

        void CheckUniform(float[] w, double bound)
        {
            Assert.All(w, v => Assert.InRange(Math.Abs(v), 0, bound));
            var variance = w.Select(v => (double)v * v).Average();
            Assert.InRange(variance, bound * bound / 3 * 0.97, bound * bound / 3 * 1.03);   // U(±b): b²/3
        }
        CheckUniform(kaiming, Math.Sqrt(6.0 / 300));
        CheckUniform(Draw(7, () => Init.XavierUniform(shape, 300, 256)), Math.Sqrt(6.0 / 556));
        Init.ManualSeed(8);
        using var linear = new Linear(300, 256);
        CheckUniform(linear.Weight.Value().ToArray<float>(), 1 / Math.Sqrt(300));
        var normal = Draw(9, () => Init.KaimingNormal(shape, 300));
        Assert.InRange(normal.Select(v => (double)v * v).Average(), 2.0 / 300 * 0.97, 2.0 / 300 * 1.03);
    }

    public static TheoryData<double, double, double, bool> SgdCases() => new()
    {
        { 0, 0, 0, false },
        { 0.9, 0, 0, false },
        { 0.9, 0.1, 1e-2, false },
        { 0.8, 0, 1e-2, true },
    };

    [Theory]
    [MemberData(nameof(SgdCases))]
    public void SgdMatchesPyTorchsRule(double momentum, double dampening, double weightDecay, bool nesterov)
    {
        const double lr = 0.1;
        var p = Uniform(1, 50, -1, 1).Select(v => (double)(float)v).ToArray();
        var buf = new double[p.Length];
        using var w = Leaf(p, "w");
        using var opt = new SGD([w], lr, momentum, dampening, weightDecay, nesterov);
        for (var step = 0; step < 4; step++)
        {
            var g = Uniform(10 + step, p.Length, -1, 1).Select(v => (double)(float)v).ToArray();
            SetGrad(w, g);
            opt.Step();
            for (var i = 0; i < p.Length; i++)
            {
                var d = g[i] + weightDecay * p[i];
                if (momentum != 0)
                {
                    buf[i] = step == 0 ? d : momentum * buf[i] + (1 - dampening) * d;
                    d = nesterov ? d + momentum * buf[i] : buf[i];
                }
                p[i] -= lr * d;
            }
            AssertClose(p, Values(w), 1e-6, 1e-5, $"SGD step {step}");
        }
        Assert.Equal(momentum != 0 ? ["w.momentum_buffer"] : [], opt.StateDict().Keys);
        Assert.Equal(4, opt.StepCount);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AdamAndAdamWMatchPyTorchsRule_StateIsTwoTensorsPerParameter(bool decoupled)
    {
        const double lr = 0.05, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
        var device = Device.CreateCpu("adam");
        var p = Uniform(2, 40, -1, 1).Select(v => (double)(float)v).ToArray();
        double[] m = new double[p.Length], v = new double[p.Length];
        using var w = Tensor.FromArray(p.Select(x => (float)x).ToArray(), new Shape(p.Length), device);
        w.RequiresGrad = true;
        w.Name = "w";
        using var frozen = Tensor.Zeros(new Shape(3), device: device);
        frozen.RequiresGrad = true;
        using Optimizer opt = decoupled ? new AdamW([w, frozen], lr, weightDecay: wd) : new Adam([w, frozen], lr, weightDecay: wd);
        for (var t = 1; t <= 3; t++)
        {
            var g = Uniform(20 + t, p.Length, -1, 1).Select(x => (double)(float)x).ToArray();
            w.Grad = Tensor.FromArray(g.Select(x => (float)x).ToArray(), w.Shape, device);
            opt.Step();
            for (var i = 0; i < p.Length; i++)
            {
                var gi = g[i];
                if (decoupled)
                    p[i] *= 1 - lr * wd;
                else
                    gi += wd * p[i];
                m[i] = b1 * m[i] + (1 - b1) * gi;
                v[i] = b2 * v[i] + (1 - b2) * gi * gi;
                p[i] -= lr / (1 - Math.Pow(b1, t)) * m[i] / (Math.Sqrt(v[i] / (1 - Math.Pow(b2, t))) + eps);
            }
            AssertClose(p, Values(w), 1e-6, 1e-5, $"{opt.GetType().Name} step {t}");
        }
        // A parameter that never had a gradient gets no state and is not moved.
        Assert.Equal(["w.exp_avg", "w.exp_avg_sq"], opt.StateDict().Keys.Order());
        Assert.Equal(2 * 4L * p.Length, device.Allocator.Current(MemoryCategory.OptimizerState));
        Assert.All(frozen.ToArray<float>(), x => Assert.Equal(0f, x));
        opt.Dispose();
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.OptimizerState));
    }

    [Fact]
    public void ZeroGradFreesGradientMemory()
    {
        var device = Device.CreateCpu("zerograd");
        Init.ManualSeed(4);
        using var model = new Linear(30, 20, device: device);
        using var opt = new SGD(model.Parameters(), 0.1);
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Normal(new Shape(8, 30), 0, 1, 5, device: device);
            F.Sum(model.Forward(x)).Backward();
        }
        Assert.Equal(4L * (30 * 20 + 20), device.Allocator.Current(MemoryCategory.Gradient));
        opt.ZeroGrad();
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Gradient));
        Assert.All(model.Parameters(), p => Assert.Null(p.Grad));
    }

    [Fact]
    public void SchedulesFollowTheirFormulas()
    {
        var cosine = new CosineSchedule(100, minFactor: 0.1);
        Assert.Equal(1.0, cosine.Factor(0), 12);
        Assert.Equal(0.55, cosine.Factor(50), 12);
        Assert.Equal(0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * 0.3)), cosine.Factor(30), 12);
        Assert.Equal(0.1, cosine.Factor(100), 12);
        Assert.Equal(0.1, cosine.Factor(500), 12);

        var warm = new WarmupSchedule(4, new CosineSchedule(10));
        Assert.Equal([0.25, 0.5, 0.75, 1.0, 1.0], Enumerable.Range(0, 5).Select(s => warm.Factor(s)));
        Assert.Equal(0.5, warm.Factor(4 + 5), 12);
        Assert.Equal(1.0, new WarmupSchedule(2).Factor(1000), 12);

        using var w = Leaf([1.0], "w");
        using var opt = new SGD([w], 0.2);
        warm.Apply(opt, 1);
        Assert.Equal(0.1, opt.Lr, 12);
        Assert.Equal(0.2, opt.BaseLr, 12);
    }

    [Fact]
    public void TrainerAppliesTheScheduleEveryStepAcrossEpochs()
    {
        var data = EmbeddedData.FashionMnistSlice();
        Init.ManualSeed(2);
        using var model = Zoo.Mlp(hidden: 16);
        using var opt = new Adam(model.Parameters(), 1e-3);
        var schedule = new CosineSchedule(10);
        var trainer = new Trainer(model, opt, Device.Cpu) { Schedule = schedule };
        trainer.TrainEpoch(data.Train, data.Test, epoch: 1, batchSize: 64, seed: 2, maxSteps: 4);
        Assert.Equal(1e-3 * schedule.Factor(3), opt.Lr, 15);
        trainer.TrainEpoch(data.Train, data.Test, epoch: 2, batchSize: 64, seed: 2, maxSteps: 4);
        Assert.Equal(8, trainer.GlobalStep);
        Assert.Equal(1e-3 * schedule.Factor(7), opt.Lr, 15);
    }
}
