using Frugal.Formats;

namespace Frugal.Tests;

/// <summary>CSR patterns: construction, invariants with named violations, magnitude selection, dense round trip.</summary>
public class CsrPatternTests
{
    [Fact]
    public void FromPartsAcceptsAValidPatternAndCopiesIt()
    {
        int[] rowPtr = [0, 2, 2, 3];
        int[] colIdx = [0, 3, 1];
        var p = CsrPattern.FromParts(3, 4, rowPtr, colIdx);
        rowPtr[1] = 99;
        Assert.Equal([0, 2, 2, 3], p.RowPtr);
        Assert.Equal(3, p.Nnz);
        Assert.Equal(0.25, p.Density, 12);
        Assert.Equal(4L * (4 + 3), p.IndexBytes);
        Assert.Equal([5f, 0, 0, 6f, 0, 0, 0, 0, 0, 7f, 0, 0], p.ToDense([5f, 6f, 7f]));
    }

    [Theory]
    [InlineData(new[] { 0, 2, 3 }, new[] { 0, 3, 1 }, "3 row pointers, expected 4")]
    [InlineData(new[] { 1, 2, 2, 3 }, new[] { 0, 3, 1 }, "must run from 0 to 3")]
    [InlineData(new[] { 0, 2, 1, 3 }, new[] { 0, 3, 1 }, "row pointer 2 (1) is below row pointer 1 (2)")]
    [InlineData(new[] { 0, 2, 2, 3 }, new[] { 0, 4, 1 }, "column index 4 at entry 1 (row 0) is out of range [0, 4)")]
    [InlineData(new[] { 0, 2, 2, 3 }, new[] { 3, 0, 1 }, "column indices of row 0 are not strictly increasing (3 then 0 at entry 1)")]
    [InlineData(new[] { 0, 2, 2, 3 }, new[] { 1, 1, 1 }, "not strictly increasing (1 then 1")]
    public void FromPartsNamesTheViolation(int[] rowPtr, int[] colIdx, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => CsrPattern.FromParts(3, 4, rowPtr, colIdx));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-0.1)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    public void DensityOutsideZeroOneIsRefused(double density)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => CsrPattern.Random(4, 4, density, 1));
        Assert.Contains("density must be in (0, 1]", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => CsrPattern.FromDense(new float[16], 4, 4, density));
    }

    [Fact]
    public void RandomPatternsAreValidSeededAndEvenPerRow()
    {
        var a = CsrPattern.Random(50, 40, 0.1, 7);
        var b = CsrPattern.Random(50, 40, 0.1, 7);
        Assert.Equal(a.ColIdx, b.ColIdx);
        Assert.NotEqual(a.ColIdx, CsrPattern.Random(50, 40, 0.1, 8).ColIdx);
        Assert.Equal(50 * 4, a.Nnz);
        // Valid by construction: re-validating through FromParts must not throw.
        CsrPattern.FromParts(a.Rows, a.Cols, a.RowPtr.ToArray(), a.ColIdx.ToArray());
        Assert.Equal(50, CsrPattern.Random(50, 5, 0.01, 1).Nnz);   // at least one per row
    }

    [Fact]
    public void FromDenseKeepsTheLargestMagnitudesAndRoundTrips()
    {
        float[] dense = [0.1f, -5f, 0, 2f, 0.3f, -0.2f, 4f, 1f, 0, 0, -3f, 0.5f];
        var (p, values) = CsrPattern.FromDense(dense, 3, 4, 0.5);
        Assert.Equal(6, p.Nnz);
        Assert.Equal([-5f, 2f, 4f, 1f, -3f, 0.5f], values);
        Assert.Equal([0, 2, 4, 6], p.RowPtr);
        Assert.Equal([1, 3, 2, 3, 2, 3], p.ColIdx);
        var back = p.ToDense(values);
        Assert.Equal(dense.Select(v => Math.Abs(v) >= 0.5f ? v : 0f), back);
        Assert.Throws<ArgumentException>(() => p.ToDense(new float[5]));
        Assert.Throws<ArgumentException>(() => CsrPattern.FromDense(new float[11], 3, 4, 0.5));
    }
}
