using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace Frugal.Backends.Cpu;

/// <summary>
/// CPU kernels of a CSR weight W [rows, cols] (row pointers, column indices sorted within each row, values) in a
/// linear layer, the CPU twins of cuSPARSE's SpMM and SDDMM. Activations are taken and given batch-minor
/// (transposed: one contiguous row of the batch per feature), so that each stored value is one vector
/// multiply-add over the batch instead of a scalar gather:
/// <list type="bullet">
/// <item><see cref="MultiplyTransposed"/>: Yᵀ [rows, batch] = W · Xᵀ, i.e. Y = X·Wᵀ (forward);</item>
/// <item><see cref="Multiply"/>: dXᵀ [cols, batch] = Wᵀ · dYᵀ, i.e. dX = dY·W (input gradient);</item>
/// <item><see cref="SampledGradient"/>: dW = dYᵀ·X on W's own pattern only (SDDMM: the dense dW is never formed).</item>
/// </list>
/// Work is split over rows of W, or over slices of the batch, so every output element is summed by one thread in
/// index order: results do not depend on the thread count.
/// </summary>
internal static unsafe class CsrKernels
{
    /// <summary>Yᵀ [rows, batch] = W · Xᵀ with Xᵀ [cols, batch].</summary>
    public static void MultiplyTransposed(int rows, int* rowPtr, int* colIdx, float* values, int batch, float* xT, float* yT)
    {
        StridedLoop.ForRows(rows, Math.Max((long)rowPtr[rows] / Math.Max(rows, 1), 1) * batch,
            (r0, r1) => ForwardRows(r0, r1, rowPtr, colIdx, values, batch, xT, yT));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRows(long r0, long r1, int* rowPtr, int* colIdx, float* values, int batch, float* xT, float* yT)
    {
        for (var r = r0; r < r1; r++)
        {
            var y = new Span<float>(yT + r * batch, batch);
            y.Clear();
            for (var k = rowPtr[r]; k < rowPtr[r + 1]; k++)
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(xT + (long)colIdx[k] * batch, batch), values[k], y, y);
        }
    }

    /// <summary>dXᵀ [cols, batch] = Wᵀ · dYᵀ with dYᵀ [rows, batch]; threads take slices of the batch.</summary>
    public static void Multiply(int rows, int cols, int* rowPtr, int* colIdx, float* values, int batch, float* dyT, float* dxT)
    {
        const int MinSlice = 16;
        var slices = (int)Math.Clamp((long)rowPtr[rows] * batch / StridedLoop.ParallelThreshold, 1, Math.Max(1, Math.Min(Environment.ProcessorCount * 2, batch / MinSlice)));
        Parallel.For(0, slices, s => InputGradientSlice(batch * s / slices, batch * (s + 1) / slices, rows, cols, rowPtr, colIdx, values, batch, dyT, dxT));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void InputGradientSlice(int b0, int b1, int rows, int cols, int* rowPtr, int* colIdx, float* values, int batch, float* dyT, float* dxT)
    {
        var width = b1 - b0;
        for (var c = 0; c < cols; c++)
            new Span<float>(dxT + (long)c * batch + b0, width).Clear();
        for (var r = 0; r < rows; r++)
        {
            var g = new ReadOnlySpan<float>(dyT + (long)r * batch + b0, width);
            for (var k = rowPtr[r]; k < rowPtr[r + 1]; k++)
            {
                var d = new Span<float>(dxT + (long)colIdx[k] * batch + b0, width);
                TensorPrimitives.MultiplyAdd(g, values[k], d, d);
            }
        }
    }

    /// <summary>dW values [nnz] = Σ_b dY[b, r]·X[b, c] for each stored (r, c), from dYᵀ [rows, batch] and
    /// Xᵀ [cols, batch]: one dot product of contiguous rows per value.</summary>
    public static void SampledGradient(int rows, int* rowPtr, int* colIdx, int batch, float* dyT, float* xT, float* dValues)
    {
        StridedLoop.ForRows(rows, Math.Max((long)rowPtr[rows] / Math.Max(rows, 1), 1) * batch,
            (r0, r1) => SampledRows(r0, r1, rowPtr, colIdx, batch, dyT, xT, dValues));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SampledRows(long r0, long r1, int* rowPtr, int* colIdx, int batch, float* dyT, float* xT, float* dValues)
    {
        for (var r = r0; r < r1; r++)
        {
            var g = new ReadOnlySpan<float>(dyT + r * batch, batch);
            for (var k = rowPtr[r]; k < rowPtr[r + 1]; k++)
                dValues[k] = TensorPrimitives.Dot(g, new ReadOnlySpan<float>(xT + (long)colIdx[k] * batch, batch));
        }
    }
}
