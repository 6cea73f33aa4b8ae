using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Whole-model training on real Fashion-MNIST images (the embedded slice, so results do not depend on
/// what is installed): the models the CLI trains must learn.</summary>
public class TrainingTests
{
    [Fact]
    public void MlpLearnsFashionMnistSliceInOneEpoch()
    {
        var data = EmbeddedData.FashionMnistSlice();
        Init.ManualSeed(7);
        using var model = Zoo.Mlp();
        using var opt = new Adam(model.Parameters(), 1e-3);
        var trainer = new Trainer(model, opt, Device.Cpu);
        var before = trainer.Evaluate(data.Test);
        var r = trainer.TrainEpoch(data.Train, data.Test, epoch: 1, batchSize: 128, seed: 7);
        Assert.InRange(before, 0.0, 0.3);
        Assert.True(r.TestAccuracy >= 0.78, $"test accuracy {r.TestAccuracy:F4} after one epoch of 10k images");
        Assert.True(r.TrainLoss < 0.8, $"mean training loss {r.TrainLoss:F4}");
    }

    [Fact]
    public void CnnLearnsFromFortySteps()
    {
        var data = EmbeddedData.FashionMnistSlice();
        Init.ManualSeed(3);
        using var model = Zoo.Cnn();
        using var opt = new Adam(model.Parameters(), 1e-3);
        var losses = new List<double>();
        var trainer = new Trainer(model, opt, Device.Cpu) { OnStep = (_, _, loss, _) => losses.Add(loss) };
        var r = trainer.TrainEpoch(data.Train, data.Test, epoch: 1, batchSize: 64, seed: 3, maxSteps: 40);
        Assert.Equal(40, losses.Count);
        Assert.True(losses[^1] < losses[0] * 0.7, $"running loss {losses[0]:F3} -> {losses[^1]:F3}");
        Assert.True(r.TestAccuracy >= 0.6, $"test accuracy {r.TestAccuracy:F4} after 40 steps");
    }

    [Fact]
    public void TrainingIsBitwiseReproducible()
    {
        var data = EmbeddedData.FashionMnistSlice();
        float[][] Train(string model)
        {
            Init.ManualSeed(11);
            Rng.ManualSeed(11);
            using var m = Zoo.Create(model);
            using var opt = new Adam(m.Parameters(), 1e-3);
            new Trainer(m, opt, Device.Cpu).TrainEpoch(data.Train, data.Test, epoch: 1, batchSize: 128, seed: 11, maxSteps: 12);
            return m.Parameters().Select(p => p.ToArray<float>()).ToArray();
        }
        foreach (var model in Zoo.Names)
        {
            var first = Train(model);
            var second = Train(model);
            Assert.Equal(first.Length, second.Length);
            for (var i = 0; i < first.Length; i++)
                Assert.True(first[i].AsSpan().SequenceEqual(second[i]), $"{model}: parameter {i} differs between two identical runs");
        }
    }
}
