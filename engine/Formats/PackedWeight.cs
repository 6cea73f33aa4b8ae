namespace Frugal.Formats;

/// <summary>
/// What a packed parameter (the codes of a master-free quantized weight, U8) needs beyond its bytes: the weight it
/// packs (format, shape, scales), the logical shape its gradient has, and the stream of its stochastic rounding. The
/// optimizer reads it to update the weight in F32 and write the result back into the codes.
/// </summary>
internal sealed class PackedWeight(QuantizedWeight weight, Shape logicalShape, ulong seed)
{
    private ulong _draws;

    /// <summary>The codes and scales.</summary>
    public QuantizedWeight Weight => weight;

    /// <summary>The shape of the weight's values and gradient ([out, in] or [out, in, k, k]).</summary>
    public Shape LogicalShape => logicalShape;

    /// <summary>The weight's values as an F32 tensor of <see cref="LogicalShape"/> (not differentiable).</summary>
    public Tensor Dequantize()
    {
        using (Autograd.Autograd.NoGrad())
            return F.Dequantize(weight, logicalShape);
    }

    /// <summary>Writes <paramref name="values"/> (F32, <see cref="LogicalShape"/>) back into the codes with
    /// stochastic rounding, re-estimating each group's scale; every call draws fresh random numbers.</summary>
    public void Requantize(Tensor values)
    {
        if (values.Shape != logicalShape || values.DType != DType.F32 || !values.IsContiguous)
            throw new ArgumentException($"{weight.Format}: cannot write {values.Describe()} into a weight of shape {logicalShape}");
        var args = new Backends.QuantizeArgs(weight.Format.Scheme, true, seed, _draws);
        _draws += (ulong)values.Numel;
        values.Backend.Quantize(weight.View, values.View, args);
    }
}
