namespace Frugal;

public static partial class F
{
    /// <summary>
    /// Scaled dot-product attention softmax(q·kᵀ / √d [+ causal mask])·v over q, k, v [..., T, d] (batch and head
    /// dimensions in front). With <paramref name="causal"/> position t attends to positions ≤ t only. The softmax is
    /// the numerically stable row kernel (maximum subtracted). With <paramref name="memoryEfficient"/> the
    /// [..., T, T] scores are not kept for backward: the attention runs one slice of the leading dimensions at a time
    /// as a checkpoint segment (only q, k and v are saved) and is recomputed, slice by slice, in backward, so at most
    /// one slice's T × T matrix exists at once.
    /// </summary>
    /// <exception cref="ShapeMismatchException">q, k and v are not [..., T, d] alike (k and v may have their own length).</exception>
    public static Tensor ScaledDotProductAttention(Tensor q, Tensor k, Tensor v, bool causal = true, bool memoryEfficient = false)
    {
        const string op = "ScaledDotProductAttention";
        Check.Compatible(op, q, k);
        Check.Compatible(op, q, v);
        Check.Float(op, q);
        if (q.Rank < 2 || k.Rank != q.Rank || v.Rank != q.Rank || k.Shape[^1] != q.Shape[^1] || v.Shape[^2] != k.Shape[^2]
            || !q.Shape.Dims.AsSpan(0, q.Rank - 2).SequenceEqual(k.Shape.Dims.AsSpan(0, k.Rank - 2))
            || !q.Shape.Dims.AsSpan(0, q.Rank - 2).SequenceEqual(v.Shape.Dims.AsSpan(0, v.Rank - 2)))
            throw new ShapeMismatchException($"{op}: q {q.Describe()}, k {k.Describe()} and v {v.Describe()} must be [..., T, d], [..., S, d] and [..., S, dv]");
        if (causal && q.Shape[^2] != k.Shape[^2])
            throw new ShapeMismatchException($"{op}: a causal mask needs as many queries as keys, got {q.Shape[^2]} and {k.Shape[^2]}");
        if (!memoryEfficient)
            return Attention(q, k, v, causal);
        // One slice of the leading dimensions per checkpoint segment, then the slices back together.
        using var q3 = q.Reshape(-1, q.Shape[^2], q.Shape[^1]);
        using var k3 = k.Reshape(-1, k.Shape[^2], k.Shape[^1]);
        using var v3 = v.Reshape(-1, v.Shape[^2], v.Shape[^1]);
        var parts = new Tensor[q3.Shape[0]];
        try
        {
            for (var i = 0; i < parts.Length; i++)
            {
                using var qi = q3.Narrow(0, i, 1);
                using var ki = k3.Narrow(0, i, 1);
                using var vi = v3.Narrow(0, i, 1);
                parts[i] = Checkpoint.Run(t => Attention(t[0], t[1], t[2], causal), qi, ki, vi);
            }
            using var joined = Concat(parts, 0);
            return joined.Reshape([.. q.Shape.Dims[..^1], v.Shape[^1]]);
        }
        finally
        {
            foreach (var p in parts)
                p?.Dispose();
        }
    }

    /// <summary>softmax(q·kᵀ/√d + mask)·v, composed from the recorded ops.</summary>
    private static Tensor Attention(Tensor q, Tensor k, Tensor v, bool causal)
    {
        using var raw = MatMul(q, k, transB: true);
        using var scores = raw.Mul(1 / Math.Sqrt(q.Shape[^1]));
        using var masked = causal ? CausalMask(scores) : null;
        using var weights = Softmax(masked ?? scores, -1);
        return MatMul(weights, v);
    }

    /// <summary>scores with every entry above the diagonal of its last two dimensions set to −∞.</summary>
    private static Tensor CausalMask(Tensor scores)
    {
        var t = scores.Shape[^1];
        var above = new byte[t * t];
        for (var i = 0; i < t; i++)
        {
            for (var j = i + 1; j < t; j++)
                above[i * t + j] = 1;
        }
        using var mask = Tensor.FromArray(above, new Shape(t, t), scores.Device, Memory.MemoryCategory.Workspace, "causal_mask");
        using var minus = Tensor.Full(new Shape(), double.NegativeInfinity, scores.DType, scores.Device);
        return Where(mask, minus, scores);
    }
}
