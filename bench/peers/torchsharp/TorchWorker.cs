using System.Runtime.CompilerServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Frugal.Peers.TorchSharp;

/// <summary>The TorchSharp side: the same three models written as a PyTorch user writes them, trained with
/// torch.optim's Adam and AdamW. Nothing here may run before <see cref="ElfVersionPatch"/> has patched the native
/// library, so every TorchSharp type is touched from these methods only.</summary>
internal static class TorchWorker
{
    /// <summary>Trains <paramref name="spec"/> and measures its throughput.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static RunResult Run(ModelSpec spec, WorkerSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        // Intra-op threads as asked; one inter-op thread (a training step is one chain of ops).
        torch.set_num_threads(settings.Threads);
        torch.set_num_interop_threads(1);
        var (xs, ys, source) = Batches(spec);
        torch.manual_seed(1);
        using var model = Create(spec);
        using var opt = CreateOptimizer(spec, model);
        // Timed: forward, loss, backward, optimizer step, gradients set to None (PyTorch 2's zero_grad default;
        // Frugal drops them too), and the step's DisposeScope freeing its temporaries.
        var measured = Timing.Run((i, read) =>
        {
            using var scope = torch.NewDisposeScope();
            var loss = Loss(spec, model, xs[i % BatchPool.Size], ys[i % BatchPool.Size]);
            loss.backward();
            opt.step();
            model.zero_grad(set_to_none: true);
            return read ? loss.item<float>() : double.NaN;
        }, spec.MinWarmupSteps, settings.WarmupSeconds, settings.Steps, settings.MaxSeconds);
        return new("torchsharp", spec.Name, model.parameters().Sum(p => p.numel()), measured.Warmup, measured.Steps, measured.Seconds,
            (double)spec.UnitsPerStep * measured.Steps / measured.Seconds, measured.Loss, measured.Spread, source,
            $"TorchSharp {typeof(torch).Assembly.GetName().Version}, libtorch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {torch.get_num_interop_threads()} inter-op");
    }

    /// <summary>The batch pool as torch tensors: float32 images [B, 1, 28, 28] and int64 labels [B], or int64
    /// tokens and targets [B, T] (embedding and cross_entropy take int64 indices).</summary>
    public static (TorchTensor[] Inputs, TorchTensor[] Targets, string Source) Batches(ModelSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        static TorchTensor[] Indices(int[][] pool, long[] shape) => [.. pool.Select(p => torch.tensor(p.Select(v => (long)v).ToArray(), shape))];
        if (spec.Name == "gpt")
        {
            var (inputs, targets, text) = BatchPool.Tokens(spec.Batch);
            long[] shape = [spec.Batch, ModelSpec.GptContext];
            return (Indices(inputs, shape), Indices(targets, shape), text);
        }
        var (pixels, labels, source) = BatchPool.Images(spec.Batch);
        return ([.. pixels.Select(p => torch.tensor(p, [spec.Batch, 1, 28, 28]))], Indices(labels, [spec.Batch]), source);
    }

    /// <summary>The model, its parameters named as Frugal's (so that <see cref="CheckWorker"/> can copy them across).</summary>
    public static Module<TorchTensor, TorchTensor> Create(ModelSpec spec) => spec?.Name switch
    {
        // Zoo.Mlp: Flatten, 784-512 ReLU, 512-512 ReLU, 512-10.
        "mlp" => Sequential(Flatten(), Linear(784, 512), ReLU(), Linear(512, 512), ReLU(), Linear(512, 10)),
        // Zoo.Cnn: conv 1→32 3×3 pad 1, ReLU, max-pool 2; conv 32→64 likewise; flatten 3136 → 256 ReLU → 10.
        "cnn" => Sequential(
            Conv2d(1, 32, 3, padding: 1), ReLU(), MaxPool2d(2),
            Conv2d(32, 64, 3, padding: 1), ReLU(), MaxPool2d(2),
            Flatten(), Linear(64 * 7 * 7, 256), ReLU(), Linear(256, 10)),
        "gpt" => new TorchGpt(Frugal.Data.TextCorpus.Vocab, ModelSpec.GptContext, layers: 2, width: 128, heads: 4),
        _ => throw new ArgumentException($"unknown model {spec?.Name}"),
    };

    /// <summary>Adam 1e-3 for mlp and cnn; for gpt AdamW 1e-3 with weight decay 0.1 on matrices (embeddings and
    /// linear weights) and none on biases and LayerNorm parameters, as Frugal's Adam.MatricesOnly.</summary>
    public static optim.Optimizer CreateOptimizer(ModelSpec spec, Module<TorchTensor, TorchTensor> model)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(model);
        if (spec.Name != "gpt")
            return torch.optim.Adam(model.parameters(), lr: 1e-3);
        var parameters = model.parameters().ToList();
        return torch.optim.AdamW(
        [
            new AdamW.ParamGroup(parameters.Where(p => p.dim() >= 2), lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, amsgrad: false, maximize: false),
            new AdamW.ParamGroup(parameters.Where(p => p.dim() < 2), lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0, amsgrad: false, maximize: false),
        ], lr: 1e-3);
    }

    /// <summary>Mean cross-entropy: of the classes for mlp and cnn, of the next tokens for gpt.</summary>
    public static TorchTensor Loss(ModelSpec spec, Module<TorchTensor, TorchTensor> model, TorchTensor x, TorchTensor y)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(model);
        var output = model.call(x);
        return spec.Name == "gpt"
            ? functional.cross_entropy(output.view(-1, output.shape[^1]), y.view(-1))
            : functional.cross_entropy(output, y);
    }
}

/// <summary>Frugal.Models.Gpt in TorchSharp: token and position embeddings N(0, 0.02²), pre-norm blocks, a final
/// LayerNorm and a head tied to the token embedding (logits = h·Eᵀ, no bias).</summary>
internal sealed class TorchGpt : Module<TorchTensor, TorchTensor>
{
    private readonly Embedding wte;
    private readonly Embedding wpe;
    private readonly ModuleList<TorchBlock> h;
    private readonly LayerNorm ln_f;

    /// <summary>A model of <paramref name="layers"/> blocks of <paramref name="width"/> channels.</summary>
    public TorchGpt(long vocab, long context, int layers, long width, long heads) : base("gpt")
    {
        wte = Embedding(vocab, width);
        wpe = Embedding(context, width);
        h = ModuleList([.. Enumerable.Range(0, layers).Select(_ => new TorchBlock(width, heads))]);
        ln_f = LayerNorm(width);
        using (torch.no_grad())
        {
            wte.weight!.normal_(0, 0.02);
            wpe.weight!.normal_(0, 0.02);
        }
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override TorchTensor forward(TorchTensor input)
    {
        var t = input.shape[1];
        using var positions = torch.arange(t, dtype: ScalarType.Int64);
        var x = wte.call(input) + wpe.call(positions);
        foreach (var block in h)
            x = block.call(x);
        return functional.linear(ln_f.call(x), wte.weight!);
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            wte.Dispose();
            wpe.Dispose();
            h.Dispose();
            ln_f.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>Frugal.Models.TransformerBlock: x + attn(ln1(x)), then x + mlp(ln2(x)), the MLP C → 4C → GELU (tanh
/// approximation, as Frugal's) → C.</summary>
internal sealed class TorchBlock : Module<TorchTensor, TorchTensor>
{
    private readonly LayerNorm ln1;
    private readonly TorchAttention attn;
    private readonly LayerNorm ln2;
    private readonly Sequential mlp;

    /// <summary>A block of <paramref name="width"/> channels and <paramref name="heads"/> heads.</summary>
    public TorchBlock(long width, long heads) : base("block")
    {
        ln1 = LayerNorm(width);
        attn = new TorchAttention(width, heads);
        ln2 = LayerNorm(width);
        mlp = Sequential(Linear(width, 4 * width), GELU(global::TorchSharp.Modules.GELU.Approximate.tanh), Linear(4 * width, width));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override TorchTensor forward(TorchTensor input)
    {
        var x = input + attn.call(ln1.call(input));
        return x + mlp.call(ln2.call(x));
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            ln1.Dispose();
            attn.Dispose();
            ln2.Dispose();
            mlp.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>Frugal.Nn.CausalSelfAttention: one fused [C → 3C] projection (with bias) laid out [3, heads, d] per
/// position, scaled_dot_product_attention with the causal mask, and an output projection [C → C].</summary>
internal sealed class TorchAttention : Module<TorchTensor, TorchTensor>
{
    private readonly Linear qkv;
    private readonly Linear proj;
    private readonly long heads;

    /// <summary>Attention of <paramref name="heads"/> heads over <paramref name="width"/> channels.</summary>
    public TorchAttention(long width, long heads) : base("attn")
    {
        this.heads = heads;
        qkv = Linear(width, 3 * width);
        proj = Linear(width, width);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override TorchTensor forward(TorchTensor input)
    {
        long b = input.shape[0], t = input.shape[1], c = input.shape[2];
        var parts = qkv.call(input).view(b, t, 3, heads, c / heads).permute(2, 0, 3, 1, 4);   // [3, B, H, T, d]
        // TorchSharp 0.107 spells PyTorch's is_causal "is_casual".
        var y = functional.scaled_dot_product_attention(parts[0], parts[1], parts[2], is_casual: true);   // [B, H, T, d]
        return proj.call(y.transpose(1, 2).reshape(b, t, c));
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            qkv.Dispose();
            proj.Dispose();
        }
        base.Dispose(disposing);
    }
}
