using Frugal.Backends.Cpu;

namespace Frugal.Tests;

/// <summary>The CPU CSR kernels (forward SpMM, input-gradient SpMM, SDDMM weight gradient) against float64 dense
/// references on random patterns, including empty rows and a fully empty matrix.</summary>
public unsafe class CsrKernelTests
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

    public static TheoryData<int, int, int, double> Cases() => new()
    {
        { 7, 13, 5, 0.3 },
        { 64, 96, 33, 0.1 },
        { 200, 150, 128, 0.02 },   // many empty rows
        { 5, 9, 3, 0.0 },          // nothing stored
        { 40, 30, 17, 1.0 },       // fully dense pattern
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardInputGradientAndSampledWeightGradientMatchDense(int rows, int cols, int batch, double density)
    {
        var w = RandomCsr(rows * 31 + cols, rows, cols, density);
        var x = RandomDense(1, batch * cols);
        var dy = RandomDense(2, batch * rows);
        var yT = new float[rows * batch];
        var dxT = new float[cols * batch];
        var dValues = new float[w.Values.Length];
        var dyT = new float[rows * batch];
        var xT = new float[cols * batch];
        for (var b = 0; b < batch; b++)
        {
            for (var r = 0; r < rows; r++) dyT[r * batch + b] = dy[b * rows + r];
            for (var c = 0; c < cols; c++) xT[c * batch + b] = x[b * cols + c];
        }
        fixed (int* rp = w.RowPtr, ci = w.ColIdx)
        fixed (float* v = w.Values, pyT = yT, pdxT = dxT, pdv = dValues, pdyT = dyT, pxT = xT)
        {
            CsrKernels.MultiplyTransposed(rows, rp, ci, v, batch, pxT, pyT);
            CsrKernels.Multiply(rows, cols, rp, ci, v, batch, pdyT, pdxT);
            CsrKernels.SampledGradient(rows, rp, ci, batch, pdyT, pxT, pdv);
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
