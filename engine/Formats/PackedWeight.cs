namespace Frugal.Formats;

/// <summary>
/// What a packed parameter (the codes of a master-free quantized weight, U8) needs beyond its bytes: the weight it
/// packs (format, shape, scales), the logical shape its gradient has, and the stream of its stochastic rounding. The
/// optimizer reads it to update the weight in F32 and write the result back into the codes.
/// </summary>
internal sealed class PackedWeight(QuantizedOperand weight, Shape logicalShape, ulong seed)
{
    private ulong _seed = seed;
    private ulong _draws;

    /// <summary>The stochastic rounding's stream: its seed and the random numbers drawn so far (a checkpoint keeps
    /// it, so a resumed run rounds as the uninterrupted one).</summary>
    public (ulong Seed, ulong Draws) Stream
    {
        get => (_seed, _draws);
        set => (_seed, _draws) = value;
    }

    /// <summary>The codes and scales.</summary>
    public QuantizedOperand Weight => weight;

    /// <summary>The shape of the weight's values and gradient ([out, in] or [out, in, k, k]).</summary>
    public Shape LogicalShape => logicalShape;

    /// <summary>Updates the weight a chunk of whole rows at a time: each chunk's values are dequantized into an F32
    /// tensor, <paramref name="update"/>(values, index of its first value) changes them in place, and they are
    /// written back into the codes with stochastic rounding, each group's scale re-estimated. Chunks hold about
    /// <paramref name="chunkValues"/> values and start at multiples of <paramref name="align"/> values (a power of
    /// two, so every chunk's codes start on a byte); every call draws fresh random numbers.</summary>
    public void UpdateInChunks(int chunkValues, int align, Action<Tensor, long> update)
    {
        Rewrite(chunkValues, align, update, stochastic: true);
        _draws += (ulong)((long)weight.Rows * weight.Cols);
    }

    /// <summary>Updates the weight in one call of <paramref name="update"/>(codes and scales, the stochastic rounding
    /// it must write the result back with): for a backend op that steps and requantizes the codes itself. Every call
    /// draws fresh random numbers, as <see cref="UpdateInChunks"/>.</summary>
    public void UpdateInPlace(Action<Backends.QuantView, Backends.QuantizeArgs> update)
    {
        update(weight.View, new Backends.QuantizeArgs(weight.Format.Scheme, true, _seed, _draws));
        _draws += (ulong)((long)weight.Rows * weight.Cols);
    }

    /// <summary>Sets the weight a chunk of rows at a time to the values <paramref name="fill"/>(chunk, index of its
    /// first value) writes, rounded to nearest (initialisation without a dense F32 copy of the whole weight).</summary>
    public void Initialize(int chunkValues, int align, Action<Tensor, long> fill) => Rewrite(chunkValues, align, fill, stochastic: false);

    private void Rewrite(int chunkValues, int align, Action<Tensor, long> update, bool stochastic)
    {
        var (rows, cols) = (weight.Rows, weight.Cols);
        var alignRows = align / (int)System.Numerics.BigInteger.GreatestCommonDivisor(cols, align);
        var chunkRows = Math.Min(rows, alignRows * Math.Max(1, chunkValues / (alignRows * cols)));
        var view = weight.View;
        var device = weight.Codes.Device;
        for (var r0 = 0; r0 < rows; r0 += chunkRows)
        {
            var n = Math.Min(chunkRows, rows - r0);
            var first = (long)r0 * cols;
            var part = view with
            {
                Rows = n,
                Codes = view.Codes + (nint)(first * view.Bits / 8),
                Scales = view.Scales + (nint)(first / view.Group * 8),
            };
            using var values = Tensor.Empty(new Shape(n, cols), DType.F32, device);
            values.Backend.Dequantize(part, values.View);
            update(values, first);
            values.Backend.Quantize(part, values.View, new Backends.QuantizeArgs(weight.Format.Scheme, stochastic, _seed, _draws + (ulong)first));
        }
    }
}
