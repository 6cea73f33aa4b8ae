using Frugal.Backends;

namespace Frugal.Tests;

/// <summary>The CSR/BSR kernel-table entries (forward SpMM, input-gradient SpMM, SDDMM weight gradient) on each
/// device against float64 dense references on random patterns, including empty rows, empty and full patterns,
/// blocks of 1 (CSR), 2, 8 and 16, and batches longer than the CPU's tile.</summary>
public class CsrKernelTests
{
    /// <summary>A pattern of Rows × Cols blocks of Block × Block values.</summary>
    private sealed record Csr(int Rows, int Cols, int[] RowPtr, int[] ColIdx, float[] Values, int Block)
    {
        /// <summary>The value at logical (r, c), and its index in Values (-1 where nothing is stored).</summary>
        public (double Value, int Index) At(int r, int c)
        {
            var (br, bc) = (r / Block, c / Block);
            var k = Array.IndexOf(ColIdx, bc, RowPtr[br], RowPtr[br + 1] - RowPtr[br]);
            if (k < 0)
                return (0, -1);
            var index = (k * Block + r % Block) * Block + c % Block;
            return (Values[index], index);
        }
    }

    private static Csr RandomCsr(int seed, int rows, int cols, double density, int block)
    {
        var rng = new Random(seed);
        var rowPtr = new int[rows + 1];
        var colIdx = new List<int>();
        var values = new List<float>();
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < cols; c++)
            {
                if (rng.NextDouble() < density)
                {
                    colIdx.Add(c);
                    for (var i = 0; i < block * block; i++)
                        values.Add((float)(rng.NextDouble() * 2 - 1));
                }
            }
            rowPtr[r + 1] = colIdx.Count;
        }
        return new Csr(rows, cols, rowPtr, [.. colIdx], [.. values], block);
    }

    private static float[] RandomDense(int seed, int n) => [.. TestUtil.Uniform(seed, n, -1, 1).Select(v => (float)v)];

    /// <summary>Device, block rows, block columns, batch, block density, block size.</summary>
    public static TheoryData<string, int, int, int, double, int> Cases()
    {
        var data = new TheoryData<string, int, int, int, double, int>();
        foreach (var device in new[] { "cpu", "cuda:0" })
        {
            data.Add(device, 7, 13, 5, 0.3, 1);
            data.Add(device, 64, 96, 33, 0.1, 1);
            data.Add(device, 200, 150, 128, 0.02, 1);   // many empty rows
            data.Add(device, 5, 9, 3, 0.0, 1);          // nothing stored
            data.Add(device, 40, 30, 17, 1.0, 1);       // fully dense pattern
            data.Add(device, 30, 20, 700, 0.1, 1);      // a batch of several CPU tiles
            data.Add(device, 6, 5, 9, 0.4, 2);
            data.Add(device, 4, 6, 33, 0.3, 8);
            data.Add(device, 3, 2, 300, 0.5, 16);       // BSR over more than one tile
            data.Add(device, 2, 3, 4, 1.0, 8);          // every block stored
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardInputGradientAndSampledWeightGradientMatchDense(string device, int blockRows, int blockCols, int batch, double density, int block)
    {
        var dev = TestUtil.DeviceFor(device);
        var w = RandomCsr(blockRows * 31 + blockCols + block, blockRows, blockCols, density, block);
        var (rows, cols) = (blockRows * block, blockCols * block);
        var x = RandomDense(1, batch * cols);
        var dy = RandomDense(2, batch * rows);
        float[] yT, dxT, dValues;
        var dyT = new float[rows * batch];
        var xT = new float[cols * batch];
        for (var b = 0; b < batch; b++)
        {
            for (var r = 0; r < rows; r++) dyT[r * batch + b] = dy[b * rows + r];
            for (var c = 0; c < cols; c++) xT[c * batch + b] = x[b * cols + c];
        }
        using (var scope = TensorScope.Begin())
        {
            var rowPtr = Tensor.FromArray(w.RowPtr, new Shape(blockRows + 1), dev);
            var colIdx = Tensor.FromArray(w.ColIdx, new Shape(w.ColIdx.Length), dev);
            var values = Tensor.FromArray(w.Values, new Shape(w.Values.Length), dev);
            var tdyT = Tensor.FromArray(dyT, new Shape(rows, batch), dev);
            var txT = Tensor.FromArray(xT, new Shape(cols, batch), dev);
            var tyT = Tensor.Empty(new Shape(rows, batch), device: dev);
            var tdxT = Tensor.Empty(new Shape(cols, batch), device: dev);
            var tdv = Tensor.Empty(new Shape(w.Values.Length), device: dev);
            var view = new CsrView(blockRows, blockCols, w.ColIdx.Length, rowPtr.View.Data, colIdx.View.Data, values.View.Data, block);
            dev.Backend.CsrMultiplyTransposed(view, txT.View, tyT.View);
            dev.Backend.CsrMultiply(view, tdyT.View, tdxT.View);
            dev.Backend.CsrSampledGradient(view, tdyT.View, txT.View, tdv.View);
            yT = tyT.ToArray<float>();
            dxT = tdxT.ToArray<float>();
            dValues = tdv.ToArray<float>();
        }
        // Back to batch-major for the comparison.
        var y = new float[batch * rows];
        var dx = new float[batch * cols];
        for (var b = 0; b < batch; b++)
        {
            for (var r = 0; r < rows; r++) y[b * rows + r] = yT[r * batch + b];
            for (var c = 0; c < cols; c++) dx[b * cols + c] = dxT[c * batch + b];
        }

        var expectY = new double[batch * rows];
        var expectDx = new double[batch * cols];
        for (var b = 0; b < batch; b++)
        {
            for (var r = 0; r < rows; r++)
            {
                for (var c = 0; c < cols; c++)
                {
                    var wv = w.At(r, c).Value;
                    expectY[b * rows + r] += x[b * cols + c] * wv;
                    expectDx[b * cols + c] += dy[b * rows + r] * wv;
                }
            }
        }
        var expectDw = new double[w.Values.Length];
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < cols; c++)
            {
                var index = w.At(r, c).Index;
                for (var b = 0; index >= 0 && b < batch; b++)
                    expectDw[index] += (double)dy[b * rows + r] * x[b * cols + c];
            }
        }
        // Sums of up to max(cols, rows, batch) products of magnitude ≤ 1 in float.
        var atol = 4e-7 * Math.Max(Math.Max(rows, cols), batch);
        TestUtil.AssertClose(expectY, [.. y.Select(v => (double)v)], atol, 1e-5, "Y = X·Wᵀ");
        TestUtil.AssertClose(expectDx, [.. dx.Select(v => (double)v)], atol, 1e-5, "dX = dY·W");
        TestUtil.AssertClose(expectDw, [.. dValues.Select(v => (double)v)], atol, 1e-5, "dW on the pattern");
    }
}
