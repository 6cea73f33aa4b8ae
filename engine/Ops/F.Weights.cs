using Frugal.Formats;

namespace Frugal;

public static partial class F
{
    /// <summary>y [..., out] = x [..., in] · Wᵀ (+ bias) for a weight in any format: the weight's own product
    /// (dense GEMM, sparse SpMM, fused dequantizing GEMM, two low-rank products ...).</summary>
    /// <exception cref="ShapeMismatchException">x does not fit the weight.</exception>
    public static Tensor Linear(Tensor x, Weight weight, Tensor? bias = null)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return weight.Linear(x, bias);
    }

    /// <summary>The 2-D convolution of x [N, C, H, W] with a weight [out, C, k, k] in any format.</summary>
    /// <exception cref="ShapeMismatchException">x does not fit the weight.</exception>
    public static Tensor Conv2d(Tensor x, Weight weight, Tensor? bias, ConvOptions options)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return weight.Conv2d(x, bias, options);
    }

    /// <summary>Rows of a [count, dim] weight in any format picked by I32 <paramref name="indices"/>.</summary>
    public static Tensor Embedding(Tensor indices, Weight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return weight.Embedding(indices);
    }
}
