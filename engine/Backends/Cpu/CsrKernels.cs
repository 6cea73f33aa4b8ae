using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace Frugal.Backends.Cpu;

/// <summary>
/// CPU kernels of a block-sparse weight W [rows, cols] (CSR over b × b blocks: b = 1 is CSR, b = 8/16/32 BSR) in a
/// linear layer or a convolution, the CPU twins of cuSPARSE's SpMM and SDDMM. Activations are taken and given
/// batch-minor (transposed: one contiguous row of the batch per feature), so that each stored value is one vector
/// multiply-add over the batch instead of a scalar gather:
/// <list type="bullet">
/// <item><see cref="MultiplyTransposed"/>: Yᵀ [rows, batch] = W · Xᵀ, i.e. Y = X·Wᵀ (forward);</item>
/// <item><see cref="Multiply"/>: dXᵀ [cols, batch] = Wᵀ · dYᵀ, i.e. dX = dY·W (input gradient);</item>
/// <item><see cref="SampledGradient"/>: dW = dYᵀ·X on W's own pattern only (SDDMM: the dense dW is never formed).</item>
/// </list>
/// The batch is walked in tiles of <see cref="Tile"/> columns so that a tile of Xᵀ stays in cache while every
/// stored value touches it (a convolution's batch is images × positions, far longer than a cache). Work is split
/// over rows of W and batch tiles so every output element is summed by one thread in a fixed order: results do not
/// depend on the thread count.
/// </summary>
internal static unsafe class CsrKernels
{
    /// <summary>Batch columns per tile: 1 KiB rows, so a tile of Xᵀ for a few hundred features fits L2.</summary>
    private const int Tile = 256;

    /// <summary>Yᵀ [rows, batch] = W · Xᵀ with Xᵀ [cols, batch].</summary>
    public static void MultiplyTransposed(in CsrView w, int batch, float* xT, float* yT)
    {
        var m = w;
        var rows = (long)m.Rows * m.Block;
        var tiles = (batch + Tile - 1) / Tile;
        StridedLoop.ForRows(rows * tiles, Math.Max(PerRow(m), 1) * Math.Min(batch, Tile), (i0, i1) =>
        {
            for (var i = i0; i < i1; i++)
            {
                // Tile-major order: consecutive items share a tile of Xᵀ.
                long r = i % rows, b0 = i / rows * Tile;
                ForwardRow(m, r, (int)b0, (int)Math.Min(Tile, batch - b0), batch, xT, yT);
            }
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardRow(in CsrView m, long r, int b0, int width, int batch, float* xT, float* yT)
    {
        int bs = m.Block, block = (int)(r / bs), inner = (int)(r % bs);
        int* rowPtr = (int*)m.RowPtr, colIdx = (int*)m.ColIdx;
        var values = (float*)m.Values;
        var y = new Span<float>(yT + r * batch + b0, width);
        y.Clear();
        for (var k = rowPtr[block]; k < rowPtr[block + 1]; k++)
        {
            var v = values + ((long)k * bs + inner) * bs;
            var x = xT + (long)colIdx[k] * bs * batch + b0;
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(x, width), v[0], y, y);
            for (var j = 1; j < bs; j++)
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(x + (long)j * batch, width), v[j], y, y);
        }
    }

    /// <summary>dXᵀ [cols, batch] = Wᵀ · dYᵀ with dYᵀ [rows, batch]; threads take tiles of the batch.</summary>
    public static void Multiply(in CsrView w, int batch, float* dyT, float* dxT)
    {
        var m = w;
        const int MinSlice = 16;
        var work = PerRow(m) * m.Rows * m.Block * (long)batch;
        var slices = (int)Math.Clamp(work / StridedLoop.ParallelThreshold, 1, Math.Max(1, Math.Min(CpuThreads.Count * 2, batch / MinSlice)));
        slices = Math.Max(slices, Math.Min((batch + Tile - 1) / Tile, batch));
        CpuThreads.For(slices, s => InputGradientSlice(m, batch * s / slices, batch * (s + 1) / slices, batch, dyT, dxT));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void InputGradientSlice(in CsrView m, int b0, int b1, int batch, float* dyT, float* dxT)
    {
        int bs = m.Block, width = b1 - b0;
        int* rowPtr = (int*)m.RowPtr, colIdx = (int*)m.ColIdx;
        var values = (float*)m.Values;
        for (long c = 0; c < (long)m.Cols * bs; c++)
            new Span<float>(dxT + c * batch + b0, width).Clear();
        for (var block = 0; block < m.Rows; block++)
        {
            for (var inner = 0; inner < bs; inner++)
            {
                var g = new ReadOnlySpan<float>(dyT + ((long)block * bs + inner) * batch + b0, width);
                for (var k = rowPtr[block]; k < rowPtr[block + 1]; k++)
                {
                    var v = values + ((long)k * bs + inner) * bs;
                    var d = dxT + (long)colIdx[k] * bs * batch + b0;
                    var d0 = new Span<float>(d, width);
                    TensorPrimitives.MultiplyAdd(g, v[0], d0, d0);
                    for (var j = 1; j < bs; j++)
                    {
                        var dj = new Span<float>(d + (long)j * batch, width);
                        TensorPrimitives.MultiplyAdd(g, v[j], dj, dj);
                    }
                }
            }
        }
    }

    /// <summary>dW values [nnz·b²] = Σ_b dY[b, r]·X[b, c] for each stored (r, c), from dYᵀ [rows, batch] and
    /// Xᵀ [cols, batch]: one dot product of contiguous rows per value, summed tile by tile.</summary>
    public static void SampledGradient(in CsrView w, int batch, float* dyT, float* xT, float* dValues)
    {
        var m = w;
        StridedLoop.ForRows((long)m.Rows * m.Block, Math.Max(PerRow(m), 1) * batch, (r0, r1) => SampledRows(m, r0, r1, batch, dyT, xT, dValues));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SampledRows(in CsrView m, long r0, long r1, int batch, float* dyT, float* xT, float* dValues)
    {
        var bs = m.Block;
        int* rowPtr = (int*)m.RowPtr, colIdx = (int*)m.ColIdx;
        for (var b0 = 0; b0 < Math.Max(batch, 1); b0 += Tile)
        {
            var width = Math.Min(Tile, batch - b0);
            for (var r = r0; r < r1; r++)
            {
                int block = (int)(r / bs), inner = (int)(r % bs);
                var g = new ReadOnlySpan<float>(dyT + r * batch + b0, width);
                for (var k = rowPtr[block]; k < rowPtr[block + 1]; k++)
                {
                    var d = dValues + ((long)k * bs + inner) * bs;
                    var x = xT + (long)colIdx[k] * bs * batch + b0;
                    for (var j = 0; j < bs; j++)
                    {
                        var dot = TensorPrimitives.Dot(g, new ReadOnlySpan<float>(x + (long)j * batch, width));
                        d[j] = b0 == 0 ? dot : d[j] + dot;
                    }
                }
            }
        }
    }

    /// <summary>Stored values per logical row (the work of one output element, in multiply-adds).</summary>
    private static long PerRow(in CsrView m) => m.Rows == 0 ? 0 : ((int*)m.RowPtr)[m.Rows] * (long)m.Block / m.Rows;
}
