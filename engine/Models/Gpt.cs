using Frugal.Formats;
using Frugal.Nn;

namespace Frugal.Models;

/// <summary>The shape and weight formats of a <see cref="Gpt"/>.</summary>
/// <param name="Vocab">Tokens in the vocabulary.</param>
/// <param name="Context">Longest sequence (positions).</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="Width">Model width C.</param>
/// <param name="Heads">Attention heads (C a multiple of them).</param>
/// <param name="AttentionFormat">Format of the attention projections (dense when null).</param>
/// <param name="MlpFormat">Format of the MLP layers (dense when null).</param>
/// <param name="ShareBlocks">One block's weights for every layer (ALBERT's cross-layer sharing).</param>
/// <param name="MemoryEfficientAttention">Recompute the T × T attention scores in backward instead of keeping them.</param>
/// <param name="Checkpoint">Every block a gradient checkpoint segment (only its input kept; recomputed in backward).</param>
/// <param name="EmbeddingFormat">Dense (null) or low-rank token embedding (ALBERT's factorization; the tied head uses
/// the factors: logits = (h·V)·Uᵀ).</param>
public sealed record GptConfig(int Vocab, int Context, int Layers = 4, int Width = 256, int Heads = 4,
    WeightFormat? AttentionFormat = null, WeightFormat? MlpFormat = null, bool ShareBlocks = false, bool MemoryEfficientAttention = false,
    bool Checkpoint = false, WeightFormat? EmbeddingFormat = null)
{
    /// <inheritdoc/>
    public override string ToString() => $"vocab={Vocab};context={Context};layers={Layers};width={Width};heads={Heads};attention={AttentionFormat ?? WeightFormat.Dense};mlp={MlpFormat ?? WeightFormat.Dense};embedding={EmbeddingFormat ?? WeightFormat.Dense};share={ShareBlocks};memory-efficient={MemoryEfficientAttention};checkpoint={Checkpoint}";
}

/// <summary>A pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with a 4C GELU hidden layer.</summary>
public sealed class TransformerBlock : Module
{
    /// <summary>A block of <paramref name="config"/>'s width, heads and formats.</summary>
    public TransformerBlock(GptConfig config, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(config);
        Norm1 = RegisterModule("ln1", new LayerNorm(config.Width, device: device, dtype: dtype));
        Attention = RegisterModule("attn", new CausalSelfAttention(config.Width, config.Heads, config.AttentionFormat, config.MemoryEfficientAttention, device, dtype));
        Norm2 = RegisterModule("ln2", new LayerNorm(config.Width, device: device, dtype: dtype));
        Mlp = RegisterModule("mlp", new Sequential(
            CausalSelfAttention.Layer(config.MlpFormat, config.Width, 4 * config.Width, device, dtype),
            new GELU(),
            CausalSelfAttention.Layer(config.MlpFormat, 4 * config.Width, config.Width, device, dtype)));
    }

    /// <summary>Normalisation before attention.</summary>
    public LayerNorm Norm1 { get; }

    /// <summary>Causal self-attention.</summary>
    public CausalSelfAttention Attention { get; }

    /// <summary>Normalisation before the MLP.</summary>
    public LayerNorm Norm2 { get; }

    /// <summary>C → 4C → GELU → C.</summary>
    public Sequential Mlp { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        using var scope = TensorScope.Begin();
        var h = x + Attention.Forward(Norm1.Forward(x));
        return (h + Mlp.Forward(Norm2.Forward(h))).MoveToOuter();
    }
}

/// <summary>
/// A decoder-only transformer language model (GPT-2's layout): token and position embeddings (N(0, 0.02²)), blocks of
/// pre-norm attention and MLP, a final layer norm, and an output head tied to the token embedding (logits =
/// h·Eᵀ, one matrix for both). Input: I32 tokens [B, T] with T ≤ context; output: logits [B, T, vocab].
/// </summary>
public sealed class Gpt : Module
{
    /// <summary>The model of <paramref name="config"/> (F64 only with dense weights, for reference checks).</summary>
    /// <exception cref="ArgumentException">A size is not positive, or the width is not a multiple of the heads.</exception>
    public Gpt(GptConfig config, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.Vocab <= 0 || config.Context <= 0 || config.Layers <= 0)
            throw new ArgumentException($"Gpt: vocabulary {config.Vocab}, context {config.Context} and layers {config.Layers} must be positive");
        if (config.Heads <= 0 || config.Width <= 0 || config.Width % config.Heads != 0)
            throw new ArgumentException($"Gpt: width {config.Width} is not a positive multiple of {config.Heads} heads");
        Config = config;
        try
        {
            (TokenEmbedding, PositionEmbedding, Blocks, FinalNorm) = Build(config, device, dtype);
        }
        catch
        {
            Dispose();   // a layer refused its format: free what was built
            throw;
        }
    }

    private (Embedding, Embedding, Sequential, LayerNorm) Build(GptConfig config, Device? device, DType dtype)
    {
        var wte = RegisterModule("wte", new Embedding(config.Vocab, config.Width, device, dtype, std: 0.02, format: config.EmbeddingFormat));
        var wpe = RegisterModule("wpe", new Embedding(config.Context, config.Width, device, dtype, std: 0.02));
        var blocks = new List<Module>();
        try
        {
            for (var i = 0; i < config.Layers; i++)
                blocks.Add(i > 0 && config.ShareBlocks ? new Shared(blocks[0]) : Block(config, device, dtype));
        }
        catch
        {
            foreach (var b in blocks)
                b.Dispose();
            throw;
        }
        var h = RegisterModule("h", new Sequential([.. blocks]));
        return (wte, wpe, h, RegisterModule("ln_f", new LayerNorm(config.Width, device: device, dtype: dtype)));
    }

    /// <summary>The configuration.</summary>
    public GptConfig Config { get; }

    private static Module Block(GptConfig config, Device? device, DType dtype)
    {
        var block = new TransformerBlock(config, device, dtype);
        return config.Checkpoint ? new Checkpointed(block) : block;
    }

    /// <summary>Token embedding [vocab, C] in its format (dense, or low rank: ALBERT's factorization), also the
    /// output head (tied: its weight's own product).</summary>
    public Embedding TokenEmbedding { get; }

    /// <summary>Position embedding [context, C].</summary>
    public Embedding PositionEmbedding { get; }

    /// <summary>The transformer blocks.</summary>
    public Sequential Blocks { get; }

    /// <summary>The final normalisation.</summary>
    public LayerNorm FinalNorm { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        if (x.Rank != 2 || x.DType != DType.I32 || x.Shape[1] > Config.Context || x.Shape[1] == 0)
            throw new ShapeMismatchException($"Gpt: tokens {x.Describe()} are not i32 [B, T] with 1 ≤ T ≤ {Config.Context}");
        var t = x.Shape[1];
        using var scope = TensorScope.Begin();
        var positions = Tensor.FromArray(Enumerable.Range(0, t).ToArray(), new Shape(t), x.Device);
        var h = TokenEmbedding.Forward(x) + PositionEmbedding.Forward(positions);
        h = FinalNorm.Forward(Blocks.Forward(h));
        // The tied head: h·Eᵀ, the embedding weight's own product (through the factors for a low-rank embedding:
        // E = U·Vᵀ, so h·Eᵀ = (h·V)·Uᵀ).
        return F.Linear(h, TokenEmbedding.Weight).MoveToOuter();
    }

    /// <summary>Mean cross-entropy of the next-token predictions: logits [B, T, V] against targets [B, T].</summary>
    public static Tensor Loss(Tensor logits, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(targets);
        using var flat = logits.Reshape(-1, logits.Shape[^1]);
        using var labels = targets.Reshape(-1);
        return F.CrossEntropy(flat, labels);
    }
}
