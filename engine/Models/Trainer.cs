using System.Diagnostics;
using Frugal.Data;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Models;

/// <summary>Result of one epoch.</summary>
public sealed record EpochResult(int Epoch, double TrainLoss, double TestAccuracy, double Seconds, double ExamplesPerSecond);

/// <summary>The classification training loop of the CLI: shuffled mini-batches, cross-entropy, one optimizer
/// step per batch, test accuracy after each epoch.</summary>
public sealed class Trainer(Module model, Optimizer optimizer, Device device)
{
    /// <summary>Called after every step with (step in epoch, steps in epoch, running loss, examples/s).</summary>
    public Action<int, int, double, double>? OnStep { get; set; }

    /// <summary>Called after each optimizer step with the global step count (1-based) and that step's loss.</summary>
    public Action<long, double>? OnLoss { get; init; }

    /// <summary>Learning-rate schedule applied before every step, counted over all epochs (null: constant).</summary>
    public LrSchedule? Schedule { get; init; }

    /// <summary>Called after every optimizer step and ZeroGrad (a sparse-training pattern update, e.g. SET's Step).</summary>
    public Action? AfterStep { get; init; }

    /// <summary>The loss of a batch from (inputs, logits, labels); null: cross-entropy. Distillation sets a teacher's
    /// loss here.</summary>
    public Func<Tensor, Tensor, Tensor, Tensor>? Loss { get; init; }

    /// <summary>BF16 or F16 for mixed precision (<see cref="Autocast"/>), null for F32.</summary>
    public DType? Precision { get; init; }

    /// <summary>Loss scaling (F16): the loss is scaled before backward and steps that overflow are skipped.</summary>
    public GradScaler? Scaler { get; init; }

    /// <summary>Apply each parameter's update during backward as soon as its gradient is complete
    /// (<see cref="Optimizer.StepInBackward"/>); incompatible with <see cref="Scaler"/>.</summary>
    public bool UpdateInBackward { get; init; }

    /// <summary>Clip the gradients' global L2 norm to this before each step (0: no clipping); incompatible with
    /// <see cref="UpdateInBackward"/>.</summary>
    public double ClipGradNorm { get; init; }

    /// <summary>Optimizer steps taken so far, over all epochs (a resumed run starts at the checkpoint's).</summary>
    public long GlobalStep { get => _globalStep; init => _globalStep = value; }

    private long _globalStep;

    /// <summary>Stop once <see cref="GlobalStep"/> reaches this (0: never): an interrupted run, for checkpoints.</summary>
    public long StopAtStep { get; init; }

    /// <summary>True once <see cref="StopAtStep"/> was reached.</summary>
    public bool Stopped => StopAtStep > 0 && GlobalStep >= StopAtStep;

    /// <summary>Trains one epoch; <paramref name="maxSteps"/> limits the steps (0: all). Steps of the epoch that
    /// <see cref="GlobalStep"/> says are done (a resumed run) are skipped, their batches drawn and dropped so the
    /// rest come in the same order; a stopped run returns NaN accuracy without evaluating.</summary>
    public EpochResult TrainEpoch(ImageDataset train, ImageDataset test, int epoch, int batchSize, int seed, int maxSteps = 0)
    {
        model.Train();
        var steps = (train.Count + batchSize - 1) / batchSize;
        if (maxSteps > 0)
            steps = Math.Min(steps, maxSteps);
        var clock = Stopwatch.StartNew();
        double lossSum = 0;
        long examples = 0;
        var step = 0;
        var done = (int)Math.Clamp(GlobalStep - (long)(epoch - 1) * steps, 0, steps);
        foreach (var (x, y) in train.Batches(batchSize, shuffle: true, seed: seed + epoch, device))
        {
            if (step == steps || Stopped)
                break;
            if (step < done)
            {
                step++;
                continue;
            }
            using (var scope = TensorScope.Begin())
            {
                Tensor logits;
                using (Precision is { } p ? Autocast.Enable(p) : default(Autocast.Scope?))
                    logits = model.Forward(x);
                using (logits)
                using (var loss = Loss is null ? F.CrossEntropy(logits, y) : Loss(x, logits, y))
                {
                    Schedule?.Apply(optimizer, GlobalStep);
                    if (Scaler is null)
                    {
                        optimizer.BackwardAndStep(loss, UpdateInBackward, ClipGradNorm > 0 ? () => optimizer.ClipGradNorm(ClipGradNorm) : null);
                    }
                    else if (UpdateInBackward)
                    {
                        throw new InvalidOperationException("Trainer: update in backward cannot be combined with loss scaling (the scaler must see every gradient before any update)");
                    }
                    else
                    {
                        if (ClipGradNorm > 0)
                            throw new InvalidOperationException("Trainer: gradient clipping with loss scaling would clip scaled gradients; use one or the other");
                        using (var scaled = Scaler.ScaleLoss(loss))
                            scaled.Backward();
                        Scaler.Step(optimizer);
                    }
                    _globalStep++;
                    optimizer.ZeroGrad();
                    var value = loss.Item();
                    lossSum += value;
                    OnLoss?.Invoke(_globalStep, value);
                }
            }
            AfterStep?.Invoke();
            examples += x.Shape[0];
            step++;
            OnStep?.Invoke(step, steps, lossSum / (step - done), examples / clock.Elapsed.TotalSeconds);
        }
        var seconds = clock.Elapsed.TotalSeconds;
        // Evaluation at the training batch size: the allocator's peak then describes training, not a larger eval batch.
        var accuracy = step < steps && Stopped ? double.NaN : Evaluate(test, batchSize);
        return new EpochResult(epoch, lossSum / Math.Max(step - done, 1), accuracy, seconds, examples / seconds);
    }

    /// <summary>Accuracy on <paramref name="data"/> in eval mode without recording autograd.</summary>
    public double Evaluate(ImageDataset data, int batchSize = 1000)
    {
        model.Eval();
        using var noGrad = Autograd.NoGrad();
        long correct = 0;
        foreach (var (x, y) in data.Batches(batchSize, device: device))
        {
            using var scope = TensorScope.Begin();
            using var logits = model.Forward(x);
            using var pred = F.ArgMax(logits, 1);
            var p = pred.ToArray<int>();
            var t = y.ToArray<int>();
            for (var i = 0; i < p.Length; i++)
            {
                if (p[i] == t[i])
                    correct++;
            }
        }
        model.Train();
        return correct / (double)data.Count;
    }
}
