using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Training.Distillation;

/// <summary>
/// Knowledge distillation (Hinton et al., 2015): the student learns from the teacher's softened predictions as well
/// as from the labels. <see cref="Loss"/> is α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y), both terms
/// averaged over the batch (the T² keeps the soft term's gradient scale independent of T).
/// </summary>
public static class Distillation
{
    /// <summary>The distillation loss of student logits <paramref name="student"/> [batch, classes] against teacher
    /// logits <paramref name="teacher"/> (same shape, not differentiated) and labels <paramref name="targets"/> [batch].</summary>
    /// <exception cref="ArgumentException">Devices differ (the message names both), or T ≤ 0, or α outside [0, 1].</exception>
    /// <exception cref="ShapeMismatchException">The logits' shapes differ or are not [batch, classes].</exception>
    public static Tensor Loss(Tensor student, Tensor teacher, Tensor targets, double temperature = 4, double alpha = 0.9)
    {
        const string op = "Distillation.Loss";
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(targets);
        Check.SameDevice(op, student, teacher);
        if (!(temperature > 0) || !(alpha >= 0 && alpha <= 1))
            throw new ArgumentException($"{op}: temperature must be > 0 and alpha in [0, 1], got {temperature} and {alpha}");
        if (student.Rank != 2 || student.Shape != teacher.Shape)
            throw new ShapeMismatchException($"{op}: student logits {student.Describe()} and teacher logits {teacher.Describe()} must both be [batch, classes]");
        var batch = student.Shape[0];
        using var t = teacher.Detach();
        using var tScaled = t.Mul(1 / temperature);
        using var pTeacher = F.Softmax(tScaled);
        using var logTeacher = F.LogSoftmax(tScaled);
        using var sScaled = student.Mul(1 / temperature);
        using var logStudent = F.LogSoftmax(sScaled);
        using var gap = logTeacher - logStudent;
        using var weighted = pTeacher * gap;
        using var kl = F.Sum(weighted);
        var soft = kl.Mul(alpha * temperature * temperature / batch);
        if (alpha == 1)
            return soft;
        using (soft)
        {
            using var hard = F.CrossEntropy(student, targets);
            using var scaledHard = hard.Mul(1 - alpha);
            return soft + scaledHard;
        }
    }
}

/// <summary>A teacher for offline distillation: runs <see cref="Model"/> in eval mode under <c>NoGrad</c> on each
/// batch (logits computed on the fly, never stored for the dataset) and gives the student's distillation loss. Any
/// format can be teacher or student; a teacher of the student's own architecture is born-again distillation.</summary>
public sealed class Teacher(Module model, double temperature = 4, double alpha = 0.9)
{
    /// <summary>The trained teacher.</summary>
    public Module Model { get; } = model ?? throw new ArgumentNullException(nameof(model));

    /// <summary>Softmax temperature T.</summary>
    public double Temperature { get; } = temperature;

    /// <summary>Weight α of the soft term.</summary>
    public double Alpha { get; } = alpha;

    /// <summary>The distillation loss of the student's <paramref name="studentLogits"/> on batch
    /// <paramref name="x"/> with labels <paramref name="y"/>.</summary>
    /// <exception cref="ArgumentException">The teacher is on another device than the batch (both named).</exception>
    public Tensor Loss(Tensor x, Tensor studentLogits, Tensor y)
    {
        ArgumentNullException.ThrowIfNull(x);
        var onDevice = Model.Parameters().FirstOrDefault();
        if (onDevice is not null && !ReferenceEquals(onDevice.Device, x.Device))
            throw new ArgumentException($"Teacher: the teacher's weights are on {onDevice.Device.Name}, the batch {x.Describe()} is on {x.Device.Name}: move one of them");
        var wasTraining = Model.Training;
        Model.Eval();
        try
        {
            Tensor logits;
            using (Autograd.NoGrad())
                logits = Model.Forward(x);
            using (logits)
                return Distillation.Loss(studentLogits, logits, y, Temperature, Alpha);
        }
        finally
        {
            Model.Train(wasTraining);
        }
    }
}

/// <summary>Online distillation (deep mutual learning, Zhang et al., 2018): peers trained together, each with the
/// labels and the others' averaged, detached predictions as its teacher.</summary>
public sealed class OnlineDistillation
{
    private readonly Module[] _peers;
    private readonly Optimizer[] _optimizers;

    /// <summary>Peers and one optimizer each.</summary>
    /// <exception cref="ArgumentException">Fewer than two peers, or the counts differ.</exception>
    public OnlineDistillation(IReadOnlyList<Module> peers, IReadOnlyList<Optimizer> optimizers, double temperature = 1, double alpha = 0.5)
    {
        ArgumentNullException.ThrowIfNull(peers);
        ArgumentNullException.ThrowIfNull(optimizers);
        if (peers.Count < 2 || peers.Count != optimizers.Count)
            throw new ArgumentException($"OnlineDistillation: needs at least two peers and one optimizer each, got {peers.Count} and {optimizers.Count}");
        (_peers, _optimizers, Temperature, Alpha) = ([.. peers], [.. optimizers], temperature, alpha);
    }

    /// <summary>Softmax temperature T.</summary>
    public double Temperature { get; }

    /// <summary>Weight α of the soft term.</summary>
    public double Alpha { get; }

    /// <summary>One step of every peer on batch (<paramref name="x"/>, <paramref name="y"/>); returns each peer's loss.</summary>
    public double[] Step(Tensor x, Tensor y)
    {
        using var scope = TensorScope.Begin();
        var logits = _peers.Select(p => p.Forward(x)).ToArray();
        var losses = new double[_peers.Length];
        Tensor? total = null;
        for (var i = 0; i < _peers.Length; i++)
        {
            // The others' mean logits, detached: a teacher, not a path for gradients.
            Tensor? sum = null;
            for (var j = 0; j < _peers.Length; j++)
            {
                if (j == i)
                    continue;
                var d = logits[j].Detach();
                sum = sum is null ? d : sum + d;
            }
            var teacher = sum!.Mul(1.0 / (_peers.Length - 1));
            var loss = Distillation.Loss(logits[i], teacher, y, Temperature, Alpha);
            losses[i] = loss.Item();
            total = total is null ? loss : total + loss;
        }
        total!.Backward();
        foreach (var o in _optimizers)
        {
            o.Step();
            o.ZeroGrad();
        }
        return losses;
    }
}
