using Frugal.Backends.Cpu;
using Frugal.Data;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Peers.TorchSharp;

/// <summary>The Frugal side: the models of <see cref="Zoo"/> and <see cref="Gpt"/>, trained as bench/TrainBench.cs
/// and bench/GptBench.cs train them. Frugal's CPU kernels run their loops on <see cref="CpuThreads.Count"/> threads,
/// which the parent sets through FRUGAL_NUM_THREADS, the engine's only thread setting.</summary>
internal static class FrugalWorker
{
    /// <summary>Trains <paramref name="spec"/> and measures its throughput.</summary>
    public static RunResult Run(ModelSpec spec, WorkerSettings settings)
    {
        var device = Device.CreateCpu($"peer-{spec.Name}");
        var (xs, ys, source) = Batches(spec, device);
        try
        {
            Init.ManualSeed(1);
            using var model = Create(spec, device);
            using var opt = CreateOptimizer(spec, model);
            // Timed: forward, loss, backward, optimizer step, gradients dropped (BackwardAndStep), and the step's
            // TensorScope freeing its temporaries.
            var measured = Timing.Run((i, read) =>
            {
                using var scope = TensorScope.Begin();
                var loss = Loss(spec, model, xs[i % BatchPool.Size], ys[i % BatchPool.Size]);
                var value = read ? loss.Item() : double.NaN;
                opt.BackwardAndStep(loss);
                return value;
            }, spec.MinWarmupSteps, settings.WarmupSeconds, settings.Steps, settings.MaxSeconds);
            return new("frugal", spec.Name, model.ParameterCount(), measured.Warmup, measured.Steps, measured.Seconds,
                (double)spec.UnitsPerStep * measured.Steps / measured.Seconds, measured.Loss, measured.Spread, source,
                $"Frugal {typeof(Tensor).Assembly.GetName().Version}, {CpuThreads.Count} threads (FRUGAL_NUM_THREADS)");
        }
        finally
        {
            foreach (var t in xs.Concat(ys))
                t.Dispose();
        }
    }

    /// <summary>The batch pool as Frugal tensors on <paramref name="device"/>: F32 images [B, 1, 28, 28] and I32
    /// labels [B], or I32 tokens and targets [B, T].</summary>
    public static (Tensor[] Inputs, Tensor[] Targets, string Source) Batches(ModelSpec spec, Device device)
    {
        ArgumentNullException.ThrowIfNull(spec);
        static Tensor[] Convert<T>(T[][] pool, Shape shape, Device device) where T : unmanaged
            => [.. pool.Select(p => Tensor.FromArray<T>(p, shape, device, MemoryCategory.Other, "data").DetachFromScope())];
        if (spec.Name == "gpt")
        {
            var (inputs, targets, text) = BatchPool.Tokens(spec.Batch);
            var shape = new Shape(spec.Batch, ModelSpec.GptContext);
            return (Convert(inputs, shape, device), Convert(targets, shape, device), text);
        }
        var (pixels, labels, source) = BatchPool.Images(spec.Batch);
        return (Convert(pixels, new Shape(spec.Batch, 1, 28, 28), device), Convert(labels, new Shape(spec.Batch), device), source);
    }

    /// <summary>The model: Zoo.Mlp, Zoo.Cnn, or the GPT of 2 layers, width 128, 4 heads, context 64.</summary>
    public static Module Create(ModelSpec spec, Device device) => spec?.Name switch
    {
        "mlp" => Zoo.Mlp(device: device),
        "cnn" => Zoo.Cnn(device: device),
        "gpt" => new Gpt(new GptConfig(TextCorpus.Vocab, ModelSpec.GptContext, Layers: 2, Width: 128, Heads: 4), device),
        _ => throw new ArgumentException($"unknown model {spec?.Name}"),
    };

    /// <summary>Adam 1e-3 for mlp and cnn; AdamW 1e-3 with weight decay 0.1 on matrices only for gpt (as GptBench).</summary>
    public static Optimizer CreateOptimizer(ModelSpec spec, Module model)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(model);
        return spec.Name == "gpt"
            ? new AdamW(model.Parameters(), 1e-3, weightDecay: 0.1, decay: Adam.MatricesOnly)
            : new Adam(model.Parameters(), 1e-3);
    }

    /// <summary>Mean cross-entropy: of the classes for mlp and cnn, of the next tokens (Gpt.Loss) for gpt.</summary>
    public static Tensor Loss(ModelSpec spec, Module model, Tensor x, Tensor y)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(model);
        var output = model.Forward(x);
        return spec.Name == "gpt" ? Gpt.Loss(output, y) : F.CrossEntropy(output, y);
    }
}
