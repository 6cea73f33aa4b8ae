using System.Numerics.Tensors;

namespace Frugal.Backends.Cpu;

/// <summary>
/// CPU kernels of a CSR weight W [rows, cols] (row pointers, column indices sorted within each row, values) in a
/// linear layer, the CPU twins of cuSPARSE's SpMM and SDDMM:
/// <list type="bullet">
/// <item><see cref="MultiplyTransposed"/>: Y = X·Wᵀ (forward);</item>
/// <item><see cref="Multiply"/>: dX = dY·W (input gradient);</item>
/// <item><see cref="SampledGradient"/>: dW = dYᵀ·X on W's own pattern only (SDDMM: the dense dW is never formed).</item>
/// </list>
/// Work is split over rows of the batch (or of W for SDDMM); every output element is summed by one thread in
/// index order, so results do not depend on the thread count.
/// </summary>
internal static unsafe class CsrKernels
{
    /// <summary>Y [batch, rows] = X [batch, cols] · Wᵀ.</summary>
    public static void MultiplyTransposed(int rows, int cols, int* rowPtr, int* colIdx, float* values, int batch, float* x, float* y)
    {
        var nnz = rowPtr[rows];
        StridedLoop.ForRows(batch, Math.Max(nnz, 1), (b0, b1) =>
        {
            for (var b = b0; b < b1; b++)
            {
                var xr = x + b * cols;
                var yr = y + b * rows;
                for (var r = 0; r < rows; r++)
                {
                    float acc = 0;
                    for (var k = rowPtr[r]; k < rowPtr[r + 1]; k++)
                        acc += values[k] * xr[colIdx[k]];
                    yr[r] = acc;
                }
            }
        });
    }

    /// <summary>dX [batch, cols] = dY [batch, rows] · W.</summary>
    public static void Multiply(int rows, int cols, int* rowPtr, int* colIdx, float* values, int batch, float* dy, float* dx)
    {
        var nnz = rowPtr[rows];
        StridedLoop.ForRows(batch, Math.Max(nnz, 1), (b0, b1) =>
        {
            for (var b = b0; b < b1; b++)
            {
                var gr = dy + b * rows;
                var dr = dx + b * cols;
                new Span<float>(dr, cols).Clear();
                for (var r = 0; r < rows; r++)
                {
                    var g = gr[r];
                    if (g == 0)
                        continue;
                    for (var k = rowPtr[r]; k < rowPtr[r + 1]; k++)
                        dr[colIdx[k]] += g * values[k];
                }
            }
        });
    }

    /// <summary>dW values [nnz] = Σ_b dY[b, r]·X[b, c] for each stored (r, c), from the transposes dYᵀ [rows, batch]
    /// and Xᵀ [cols, batch] (contiguous rows make each value one dot product).</summary>
    public static void SampledGradient(int rows, int* rowPtr, int* colIdx, int batch, float* dyT, float* xT, float* dValues)
    {
        StridedLoop.ForRows(rows, Math.Max((long)rowPtr[rows] / Math.Max(rows, 1), 1) * batch, (r0, r1) =>
        {
            for (var r = r0; r < r1; r++)
            {
                var g = new ReadOnlySpan<float>(dyT + r * batch, batch);
                for (var k = rowPtr[r]; k < rowPtr[r + 1]; k++)
                    dValues[k] = TensorPrimitives.Dot(g, new ReadOnlySpan<float>(xT + (long)colIdx[k] * batch, batch));
            }
        });
    }
}
