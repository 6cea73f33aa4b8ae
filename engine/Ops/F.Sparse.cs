using Frugal.Backends;

namespace Frugal;

public static partial class F
{
    /// <summary>
    /// y [batch, rows] = x [batch, cols] · Wᵀ (+ bias) for a CSR weight W [rows, cols] given by its I32 row pointers
    /// and column indices (the pattern, not trained) and F32 values [nnz] (trained). Backward gives dx = dy·W and
    /// the values' gradient on the pattern only (SDDMM): the dense dW is never formed.
    /// </summary>
    /// <exception cref="ShapeMismatchException">Shapes, dtypes or devices of x, the pattern, the values or the bias disagree.</exception>
    public static Tensor SparseLinear(Tensor x, int rows, int cols, Tensor rowPtr, Tensor colIdx, Tensor values, Tensor? bias = null)
        => SparseLinear(x, rows, cols, rowPtr, colIdx, values, bias, growth: null);

    /// <summary><see cref="SparseLinear(Tensor, int, int, Tensor, Tensor, Tensor, Tensor?)"/> that also answers a
    /// regrowth request during backward (the pattern it skips is <paramref name="growth"/>'s).</summary>
    internal static Tensor SparseLinear(Tensor x, int rows, int cols, Tensor rowPtr, Tensor colIdx, Tensor values, Tensor? bias,
        (Formats.GrowthScores Scores, Formats.CsrPattern Pattern)? growth)
    {
        const string op = "SparseLinear";
        foreach (var t in new[] { x, rowPtr, colIdx, values })
            Check.Live(op, t);
        Check.SameDevice(op, x, values);
        Check.SameDevice(op, x, rowPtr);
        Check.SameDevice(op, x, colIdx);
        if (x.DType != DType.F32 || values.DType != DType.F32)
            throw new ShapeMismatchException($"{op}: x and values must be f32, got {x.Describe()} and {values.Describe()}");
        if (rowPtr.DType != DType.I32 || colIdx.DType != DType.I32)
            throw new ShapeMismatchException($"{op}: the pattern must be i32, got {rowPtr.Describe()} and {colIdx.Describe()}");
        Check.Shape(op, rowPtr, new Shape(rows + 1), "row pointers");
        Check.Shape(op, values, colIdx.Shape, "values (one per column index)");
        if (x.Rank != 2 || x.Shape[1] != cols)
            throw new ShapeMismatchException($"{op}: input {x.Describe()} does not fit a [{rows}, {cols}] weight (expects [batch, {cols}])");
        var batch = x.Shape[0];
        var view = new CsrView(rows, cols, values.Shape[0], rowPtr.View.Data, colIdx.View.Data, values.View.Data);

        using var xT0 = x.Transpose(0, 1);
        var xT = xT0.Contiguous();
        Tensor y;
        using (var yT = Tensor.Empty(new Shape(rows, batch), DType.F32, x.Device))
        {
            x.Backend.CsrMultiplyTransposed(view, xT.View, yT.View);
            using var yView = yT.Transpose(0, 1);
            y = yView.Contiguous();
        }
        var (needDx, needDValues) = (x.RequiresGrad, values.RequiresGrad);
        var node = Autograd.Autograd.Record(y, op, x, values);
        if (node is not null)
        {
            var savedX = node.Save(xT);
            node.Backward = g =>
            {
                using var gT0 = g.Transpose(0, 1);
                using var gT = gT0.Contiguous();
                Tensor? dx = null;
                if (needDx)
                {
                    using var dxT = Tensor.Empty(new Shape(cols, batch), DType.F32, g.Device);
                    g.Backend.CsrMultiply(view, gT.View, dxT.View);
                    using var dxView = dxT.Transpose(0, 1);
                    dx = dxView.Contiguous();
                }
                if (growth is { } request)
                    request.Scores.Fill(request.Pattern, gT, savedX);
                Tensor? dValues = null;
                if (needDValues)
                {
                    dValues = Tensor.Empty(values.Shape, DType.F32, g.Device);
                    g.Backend.CsrSampledGradient(view, gT.View, savedX.View, dValues.View);
                }
                return [dx, dValues];
            };
        }
        xT.Dispose();
        if (bias is null)
            return y;
        using (y)
            return Add(y, bias);
    }
}
