using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>MSE, NLL and binary cross-entropy with logits: values against float64 references computed here, in F64
/// and F32, gradients against finite differences, NLL of log-softmax equal to the fused cross-entropy, and bad
/// shapes or targets refused by name.</summary>
public class LossTests
{
    private static readonly double[] X = Uniform(11, 12, -3, 3);
    private static readonly double[] Z = Uniform(12, 12, 0, 1);

    [Theory]
    [InlineData(false, 1e-12)]
    [InlineData(true, 1e-6)]
    public void EachLossEqualsItsFloat64Reference(bool f32, double tolerance)
    {
        Tensor Make(double[] v)
        {
            using var t = F64(v, 3, 4);
            return f32 ? t.To(DType.F32) : t.Alias();
        }
        using var x = Make(X);
        using var z = Make(Z);
        using var mse = F.MseLoss(x, z);
        Assert.Equal(X.Zip(Z, (a, b) => (a - b) * (a - b)).Average(), mse.Item(), tolerance);
        using var bce = F.BinaryCrossEntropyWithLogits(x, z);
        // The reference in its textbook form, −z·log σ(x) − (1 − z)·log(1 − σ(x)), which the stable form equals.
        var reference = X.Zip(Z, (a, b) => -b * Math.Log(1 / (1 + Math.Exp(-a))) - (1 - b) * Math.Log(1 - 1 / (1 + Math.Exp(-a)))).Average();
        Assert.Equal(reference, bce.Item(), tolerance);
        using var logp = F.LogSoftmax(x, -1);
        using var y = I32([3, -100, 0], 3);
        using var nll = F.NllLoss(logp, y);
        double Row(int r, int c) => X[r * 4 + c] - Math.Log(Enumerable.Range(0, 4).Sum(k => Math.Exp(X[r * 4 + k])));
        Assert.Equal(-(Row(0, 3) + Row(2, 0)) / 2, nll.Item(), tolerance);
        using var ce = F.CrossEntropy(x, y);
        Assert.Equal(ce.Item(), nll.Item(), tolerance);
    }

    [Fact]
    public void LargeLogitsDoNotOverflowTheBinaryCrossEntropy()
    {
        using var x = F64([800, -800, 0], 3);
        using var z = F64([1, 0, 0.5], 3);
        using var bce = F.BinaryCrossEntropyWithLogits(x, z);
        Assert.Equal(Math.Log(2) / 3, bce.Item(), 1e-12);
    }

    [Fact]
    public void GradientsMatchFiniteDifferences()
    {
        GradCheck(t => F.MseLoss(t[0], t[1]), [In(1, 3, 4), In(2, 3, 4)]);
        GradCheck(t =>
        {
            using var z = F64(Z, 3, 4);
            return F.BinaryCrossEntropyWithLogits(t[0], z);
        }, [In(AwayFromZero(3, 12), 3, 4)]);
        GradCheck(t =>
        {
            using var y = I32([1, 2, 2], 3);
            using var logp = F.LogSoftmax(t[0], -1);
            return F.NllLoss(logp, y, ignoreIndex: 1);
        }, [In(4, 3, 4)]);
    }

    [Fact]
    public void BadShapesAndTargetsAreRefusedByName()
    {
        using var a = F64(X, 3, 4);
        using var b = F64(X, 4, 3);
        Assert.Contains("MseLoss: input [3, 4]", Assert.Throws<ShapeMismatchException>(() => F.MseLoss(a, b)).Message, StringComparison.Ordinal);
        Assert.Contains("BinaryCrossEntropyWithLogits: logits [3, 4]", Assert.Throws<ShapeMismatchException>(() => F.BinaryCrossEntropyWithLogits(a, b)).Message, StringComparison.Ordinal);
        using var y = I32([0, 4, 1], 3);
        Assert.Contains("NllLoss: target 4 is outside [0, 4)", Assert.Throws<ArgumentOutOfRangeException>(() => F.NllLoss(a, y)).Message, StringComparison.Ordinal);
        using var short2 = I32([0, 1], 2);
        Assert.Contains("NllLoss: expects scores [N, C] and targets [N]", Assert.Throws<ShapeMismatchException>(() => F.NllLoss(a, short2)).Message, StringComparison.Ordinal);
    }
}
