using Frugal.Memory;

namespace Frugal.Formats;

/// <summary>A storage format: the traits table of the design (as ggml's type traits, PyTorch's layouts). Each
/// format says what it stores and how many bytes of each category that costs, converts to and from dense, and
/// supplies the products Linear layers need. The base class gives the slow path (convert to dense, compute) that
/// always works; a format overrides it with its own kernels, tested against that path. This foundation builds
/// <see cref="Dense"/>; sparse, quantized, low-rank and shared formats join as entries of the same table.</summary>
public abstract class TensorFormat
{
    /// <summary>Plain strided values.</summary>
    public static TensorFormat Dense { get; } = new DenseFormat();

    /// <summary>Every format built, for listings and the profiler.</summary>
    public static IReadOnlyList<TensorFormat> All { get; } = [Dense];

    /// <summary>Short name ("dense", "csr", "q4" ...).</summary>
    public abstract string Name { get; }

    /// <summary>Bytes a weight of this format and logical shape holds in each category it stores
    /// (values as Parameter; indices, scales as FormatMeta). Gradient and optimizer state follow the
    /// format's gradient and update rules: <see cref="GradientBytes"/>, <see cref="StateValues"/>.</summary>
    public abstract IReadOnlyDictionary<MemoryCategory, long> StorageBytes(Shape shape, DType dtype);

    /// <summary>Bytes of the gradient this format keeps for a weight of that shape.</summary>
    public abstract long GradientBytes(Shape shape, DType dtype);

    /// <summary>Number of values an optimizer keeps state for (per moment).</summary>
    public abstract long StateValues(Shape shape);

    /// <summary>The dense equivalent of a tensor in this format.</summary>
    public abstract Tensor ToDense(Tensor t);

    /// <summary>y = x·Wᵀ for a weight of this format (x [.., in], W logically [out, in]), recorded for autograd.</summary>
    public abstract Tensor LinearForward(Tensor x, Tensor weight);

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>The dense format: every value stored, gradient and optimizer state per value.</summary>
internal sealed class DenseFormat : TensorFormat
{
    public override string Name => "dense";

    public override IReadOnlyDictionary<MemoryCategory, long> StorageBytes(Shape shape, DType dtype)
        => new Dictionary<MemoryCategory, long> { [MemoryCategory.Parameter] = shape.Numel * dtype.SizeOf() };

    public override long GradientBytes(Shape shape, DType dtype) => shape.Numel * dtype.SizeOf();

    public override long StateValues(Shape shape) => shape.Numel;

    public override Tensor ToDense(Tensor t) => t;

    public override Tensor LinearForward(Tensor x, Tensor weight) => F.MatMul(x, weight, transB: true);
}
