namespace Frugal.Formats;

/// <summary>A dense weight: one trained tensor of the logical shape (any float dtype), the dense kernels.</summary>
public sealed class DenseWeight : Weight
{
    /// <summary>A weight of <paramref name="shape"/> drawn from <paramref name="init"/>.</summary>
    public DenseWeight(Shape shape, WeightInit init, Device? device = null, DType dtype = DType.F32)
        : base(shape)
    {
        ArgumentNullException.ThrowIfNull(init);
        Value = NewPart("", trained: true, () => init.Draw(shape, device, dtype));
    }

    /// <summary>A weight holding <paramref name="value"/> (taken over: the weight owns it from now on).</summary>
    public DenseWeight(Tensor value)
        : base(value?.Shape ?? throw new ArgumentNullException(nameof(value)))
    {
        Value = NewPart("", trained: true, () => value);
        Value.Buffer.Recategorize(Memory.MemoryCategory.Parameter, Value.Name);
    }

    /// <summary>The values.</summary>
    public Tensor Value { get; }

    /// <inheritdoc/>
    public override WeightFormat Format => WeightFormat.Dense;

    /// <inheritdoc/>
    public override IEnumerable<WeightPart> Parts => [new("", Value, true)];

    /// <inheritdoc/>
    public override Tensor ToDense() => Value.Reshape(Shape.Dims);

    /// <inheritdoc/>
    public override Tensor Linear(Tensor x, Tensor? bias) => F.Linear(x, Value, bias);

    /// <inheritdoc/>
    public override Tensor Conv2d(Tensor x, Tensor? bias, ConvOptions options) => F.Conv2d(x, Value, bias, options.Stride, options.Padding, options.Dilation);

    /// <inheritdoc/>
    public override Tensor Embedding(Tensor indices) => F.Embedding(indices, Value);
}
