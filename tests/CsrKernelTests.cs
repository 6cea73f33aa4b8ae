using Frugal.Backends;

namespace Frugal.Tests;

/// <summary>The CSR kernel-table entries (forward SpMM, input-gradient SpMM, SDDMM weight gradient) on each device
/// against float64 dense references on random patterns, including empty rows and empty and full patterns.</summary>
public class CsrKernelTests
{
    private sealed record Csr(int Rows, int Cols, int[] RowPtr, int[] ColIdx, float[] Values)
    {
        public double At(int r, int c)
        {
            var k = Array.IndexOf(ColIdx, c, RowPtr[r], RowPtr[r + 1] - RowPtr[r]);
            return k < 0 ? 0 : Values[k];
        }
    }

    private static Csr RandomCsr(int seed, int rows, int cols, double density)
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
                    values.Add((float)(rng.NextDouble() * 2 - 1));
                }
            }
            rowPtr[r + 1] = colIdx.Count;
        }
        return new Csr(rows, cols, rowPtr, [.. colIdx], [.. values]);
    }

    private static float[] RandomDense(int seed, int n) => [.. TestUtil.Uniform(seed, n, -1, 1).Select(v => (float)v)];

    public static TheoryData<string, int, int, int, double> Cases()
    {
        var data = new TheoryData<string, int, int, int, double>();
        foreach (var device in new[] { "cpu", "cuda:0" })
        {
            data.Add(device, 7, 13, 5, 0.3);
            data.Add(device, 64, 96, 33, 0.1);
            data.Add(device, 200, 150, 128, 0.02);   // many empty rows
            data.Add(device, 5, 9, 3, 0.0);          // nothing stored
            data.Add(device, 40, 30, 17, 1.0);       // fully dense pattern
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardInputGradientAndSampledWeightGradientMatchDense(string device, int rows, int cols, int batch, double density)
    {
        var dev = TestUtil.DeviceFor(device);
        var w = RandomCsr(rows * 31 + cols, rows, cols, density);
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
            var rowPtr = Tensor.FromArray(w.RowPtr, new Shape(rows + 1), dev);
            var colIdx = Tensor.FromArray(w.ColIdx, new Shape(w.ColIdx.Length), dev);
            var values = Tensor.FromArray(w.Values, new Shape(w.Values.Length), dev);
            var tdyT = Tensor.FromArray(dyT, new Shape(rows, batch), dev);
            var txT = Tensor.FromArray(xT, new Shape(cols, batch), dev);
            var tyT = Tensor.Empty(new Shape(rows, batch), device: dev);
            var tdxT = Tensor.Empty(new Shape(cols, batch), device: dev);
            var tdv = Tensor.Empty(new Shape(w.Values.Length), device: dev);
            var view = new CsrView(rows, cols, w.Values.Length, rowPtr.View.Data, colIdx.View.Data, values.View.Data);
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
                    var wv = w.At(r, c);
                    expectY[b * rows + r] += x[b * cols + c] * wv;
                    expectDx[b * cols + c] += dy[b * rows + r] * wv;
                }
            }
        }
        var expectDw = new double[w.Values.Length];
        for (var r = 0; r < rows; r++)
        {
            for (var k = w.RowPtr[r]; k < w.RowPtr[r + 1]; k++)
            {
                for (var b = 0; b < batch; b++)
                    expectDw[k] += (double)dy[b * rows + r] * x[b * cols + w.ColIdx[k]];
            }
        }
        // Sums of up to max(cols, rows, batch) products of magnitude ≤ 1 in float.
        var atol = 4e-7 * Math.Max(Math.Max(rows, cols), batch);
        TestUtil.AssertClose(expectY, [.. y.Select(v => (double)v)], atol, 1e-5, "Y = X·Wᵀ");
        TestUtil.AssertClose(expectDx, [.. dx.Select(v => (double)v)], atol, 1e-5, "dX = dY·W");
        TestUtil.AssertClose(expectDw, [.. dValues.Select(v => (double)v)], atol, 1e-5, "dW on the pattern");
    }
}
