using Frugal.Nn;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>BatchNorm against a float64 reference computed here (batch statistics in training, running ones in
/// eval, PyTorch's running-statistics rule), its gradients against finite differences, and its running statistics in
/// the state dict.</summary>
public class BatchNormTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void TrainingAndEvalMatchTheFloat64Reference(int rank)
    {
        int[] shape = rank == 2 ? [6, 3] : [2, 3, 2, 2];
        var values = Uniform(5, (int)new Shape(shape).Numel, -2, 2);
        using var x = F64(values, shape);
        using var bn = new BatchNorm(3, eps: 1e-5, momentum: 0.1, dtype: DType.F64);
        using var scope = TensorScope.Begin();
        var y = bn.Forward(x).ToArray<double>();
        // Channel c of element i: [N, C] rows, or [N, C, H, W] planes of 4.
        int Channel(int i) => rank == 2 ? i % 3 : i / 4 % 3;
        var per = Enumerable.Range(0, 3).Select(c => values.Where((_, i) => Channel(i) == c).ToArray()).ToArray();
        var mean = per.Select(v => v.Average()).ToArray();
        var variance = per.Select((v, c) => v.Average(u => (u - mean[c]) * (u - mean[c]))).ToArray();
        for (var i = 0; i < values.Length; i++)
            Assert.Equal((values[i] - mean[Channel(i)]) / Math.Sqrt(variance[Channel(i)] + 1e-5), y[i], 1e-12);
        var n = per[0].Length;
        var runningMean = mean.Select(m => 0.1 * m).ToArray();
        var runningVar = variance.Select(v => 0.9 + 0.1 * v * n / (n - 1)).ToArray();
        AssertClose(runningMean, bn.RunningMean.ToArray<double>(), 1e-12, 1e-12, "running mean");
        AssertClose(runningVar, bn.RunningVar.ToArray<double>(), 1e-12, 1e-12, "running variance");
        bn.Eval();
        var eval = bn.Forward(x).ToArray<double>();
        for (var i = 0; i < values.Length; i++)
            Assert.Equal((values[i] - runningMean[Channel(i)]) / Math.Sqrt(runningVar[Channel(i)] + 1e-5), eval[i], 1e-12);
    }

    [Fact]
    public void GradientsMatchFiniteDifferencesInTraining()
    {
        using var bn = new BatchNorm(3, dtype: DType.F64);
        using (var g = Tensor.FromArray(new[] { 1.5, -0.5, 2.0 }, 3))
            F.CopyInto(bn.Gamma, g);
        GradCheck(t =>
        {
            using var y = bn.Forward(t[0]);
            using var w = F64(Uniform(9, 24), 2, 3, 2, 2);
            using var weighted = y * w;
            return F.Sum(weighted);
        }, [In(8, 2, 3, 2, 2)]);
    }

    [Fact]
    public void RunningStatisticsAreInTheStateDictAndBadInputIsNamed()
    {
        using var model = new Sequential(new Linear(4, 3), new BatchNorm(3));
        Assert.Contains("1.running_mean", model.StateDict().Keys);
        Assert.Contains("1.running_var", model.StateDict().Keys);
        Assert.Equal(4 * 3 + 3 + 3 + 3, model.ParameterCount());   // the statistics are not trained
        using var bn = new BatchNorm(3);
        using var wrong = Tensor.Zeros(new Shape(4, 5));
        Assert.Contains("BatchNorm: expects [N, 3] or [N, 3, H, W], got", Assert.Throws<ShapeMismatchException>(() => bn.Forward(wrong)).Message, StringComparison.Ordinal);
        using var one = Tensor.Zeros(new Shape(1, 3));
        Assert.Contains("more than one value per channel", Assert.Throws<ArgumentException>(() => bn.Forward(one)).Message, StringComparison.Ordinal);
    }
}
