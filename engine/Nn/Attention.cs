using Frugal.Formats;

namespace Frugal.Nn;

/// <summary>
/// Multi-head causal self-attention over x [B, T, C]: one projection to queries, keys and values ([C, 3C]), heads of
/// C / heads channels, scaled dot-product attention with a causal mask (<see cref="F.ScaledDotProductAttention"/>,
/// optionally memory-efficient), and an output projection [C, C]. Both projections are made by a
/// <see cref="WeightFormat"/>, so they can be sparse, low-rank or quantized.
/// </summary>
public sealed class CausalSelfAttention : Module
{
    /// <summary>Attention of <paramref name="heads"/> heads over width <paramref name="width"/>, projections in
    /// <paramref name="format"/> (dense F32 or F64 when null).</summary>
    /// <exception cref="ArgumentException">The width is not a multiple of the heads, or a non-dense format in F64.</exception>
    public CausalSelfAttention(int width, int heads, WeightFormat? format = null, bool memoryEfficient = false, Device? device = null, DType dtype = DType.F32)
    {
        if (heads <= 0 || width <= 0 || width % heads != 0)
            throw new ArgumentException($"CausalSelfAttention: width {width} is not a positive multiple of {heads} heads");
        (Width, Heads, MemoryEfficient) = (width, heads, memoryEfficient);
        Qkv = RegisterModule("qkv", Layer(format, width, 3 * width, device, dtype));
        Proj = RegisterModule("proj", Layer(format, width, width, device, dtype));
    }

    /// <summary>A linear layer in <paramref name="format"/>: dense ones in any float dtype, others in F32.</summary>
    /// <exception cref="ArgumentException">A non-dense format asked for in another dtype.</exception>
    public static Module Layer(WeightFormat? format, int inFeatures, int outFeatures, Device? device, DType dtype)
    {
        return new Linear(inFeatures, outFeatures, format, device: device, dtype: dtype);
    }

    /// <summary>Model width C.</summary>
    public int Width { get; }

    /// <summary>Number of heads.</summary>
    public int Heads { get; }

    /// <summary>True when the T × T scores are recomputed in backward instead of kept.</summary>
    public bool MemoryEfficient { get; }

    /// <summary>The query/key/value projection.</summary>
    public Module Qkv { get; }

    /// <summary>The output projection.</summary>
    public Module Proj { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        if (x.Rank != 3 || x.Shape[2] != Width)
            throw new ShapeMismatchException($"CausalSelfAttention: input {x.Describe()} is not [B, T, {Width}]");
        int b = x.Shape[0], t = x.Shape[1], d = Width / Heads;
        using var scope = TensorScope.Begin();
        var qkv = Qkv.Forward(x).Reshape(b, t, 3, Heads, d).Permute(2, 0, 3, 1, 4);   // [3, B, H, T, d]
        Tensor Part(int i) => qkv.Narrow(0, i, 1).Reshape(b, Heads, t, d);
        var y = F.ScaledDotProductAttention(Part(0), Part(1), Part(2), causal: true, MemoryEfficient);
        var merged = y.Permute(0, 2, 1, 3).Reshape(b, t, Width);
        return Proj.Forward(merged).MoveToOuter();
    }

    /// <inheritdoc/>
    public override string ToString() => $"CausalSelfAttention({Width}, heads: {Heads}{(MemoryEfficient ? ", memory-efficient" : "")})";
}
