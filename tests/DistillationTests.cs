using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Distillation;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>The distillation loss and its gradient against a float64 reference and finite differences; the teacher
/// runs without gradients and on the student's device only; online distillation trains peers together.</summary>
public class DistillationTests
{
    [Theory]
    [InlineData(4.0, 0.9)]
    [InlineData(1.0, 0.5)]
    [InlineData(2.0, 1.0)]
    public void LossMatchesTheFloat64ReferenceAndItsGradient(double temperature, double alpha)
    {
        const int batch = 3, classes = 5;
        var s = Uniform(1, batch * classes, -2, 2);
        var t = Uniform(2, batch * classes, -2, 2);
        int[] y = [4, 0, 2];
        double expected = 0;
        for (var b = 0; b < batch; b++)
        {
            var row = Enumerable.Range(0, classes);
            double Lse(double[] v, double scale) => Math.Log(row.Sum(c => Math.Exp(v[b * classes + c] / scale)));
            double lseT = Lse(t, temperature), lseS = Lse(s, temperature), lse1 = Lse(s, 1);
            foreach (var c in row)
            {
                var logPt = t[b * classes + c] / temperature - lseT;
                var logPs = s[b * classes + c] / temperature - lseS;
                expected += alpha * temperature * temperature * Math.Exp(logPt) * (logPt - logPs) / batch;
            }
            expected += (1 - alpha) * (lse1 - s[b * classes + y[b]]) / batch;
        }
        using (var scope = TensorScope.Begin())
        {
            var loss = Distillation.Loss(F64(s, batch, classes), F64(t, batch, classes), I32(y, batch), temperature, alpha);
            Assert.Equal(expected, loss.Item(), 1e-12);
        }
        GradCheck(ins =>
        {
            using var teacher = F64(t, batch, classes);
            using var labels = I32(y, batch);
            using var loss = Distillation.Loss(ins[0], teacher, labels, temperature, alpha);
            return loss.Reshape(1);
        }, [In(s, batch, classes)]);
    }

    [Fact]
    public void BadInputIsNamed()
    {
        using var s = Tensor.Zeros(new Shape(2, 3));
        using var t = Tensor.Zeros(new Shape(2, 4));
        using var y = Tensor.FromArray([0, 1], new Shape(2));
        Assert.Contains("must both be [batch, classes]", Assert.Throws<ShapeMismatchException>(() => Distillation.Loss(s, t, y)).Message, StringComparison.Ordinal);
        using var t2 = Tensor.Zeros(new Shape(2, 3));
        Assert.Throws<ArgumentException>(() => Distillation.Loss(s, t2, y, temperature: 0));
        Assert.Throws<ArgumentException>(() => Distillation.Loss(s, t2, y, alpha: 1.5));

        Init.ManualSeed(1);
        var elsewhere = Device.CreateCpu("teacher-device");
        using var teacherModel = new Linear(4, 3, device: elsewhere);
        var teacher = new Teacher(teacherModel);
        using var x = Tensor.Zeros(new Shape(2, 4));
        var e = Assert.Throws<ArgumentException>(() => teacher.Loss(x, s, y));
        Assert.Contains("teacher-device", e.Message, StringComparison.Ordinal);
        Assert.Contains(Device.Cpu.Name, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheTeacherRunsWithoutGradientsAndTheStudentLearnsFromIt()
    {
        Init.ManualSeed(2);
        using var teacherModel = new Linear(6, 4);
        using var student = new Linear(6, 4);
        var teacher = new Teacher(teacherModel, temperature: 2, alpha: 1);
        using var opt = new SGD(student.Parameters(), 0.5);
        var x = Uniform(3, 16 * 6).Select(v => (float)v).ToArray();
        double first = 0, last = 0;
        for (var step = 0; step < 60; step++)
        {
            using var scope = TensorScope.Begin();
            var tx = Tensor.FromArray(x, new Shape(16, 6));
            var ty = Tensor.FromArray(Enumerable.Range(0, 16).Select(i => i % 4).ToArray(), new Shape(16));
            var loss = teacher.Loss(tx, student.Forward(tx), ty);
            loss.Backward();
            Assert.Null(teacherModel.Weight.Value().Grad);
            opt.Step();
            opt.ZeroGrad();
            last = loss.Item();
            if (step == 0)
                first = last;
        }
        Assert.True(last < first * 0.2, $"soft loss {first} -> {last}");
        Assert.True(teacherModel.Training, "the teacher's mode is restored");
    }

    [Fact]
    public void OnlinePeersLearnTogether()
    {
        Init.ManualSeed(3);
        using var a = new Linear(6, 3);
        using var b = new Linear(6, 3);
        using var oa = new SGD(a.Parameters(), 0.3);
        using var ob = new SGD(b.Parameters(), 0.3);
        var online = new OnlineDistillation([a, b], [oa, ob]);
        using var x = Tensor.FromArray(Uniform(4, 12 * 6).Select(v => (float)v).ToArray(), new Shape(12, 6));
        using var y = Tensor.FromArray(Enumerable.Range(0, 12).Select(i => i % 3).ToArray(), new Shape(12));
        var first = online.Step(x, y);
        double[] last = first;
        for (var i = 0; i < 40; i++)
            last = online.Step(x, y);
        Assert.True(last[0] < first[0] && last[1] < first[1], $"{first[0]}, {first[1]} -> {last[0]}, {last[1]}");
        Assert.Throws<ArgumentException>(() => new OnlineDistillation([a], [oa]));
    }
}
