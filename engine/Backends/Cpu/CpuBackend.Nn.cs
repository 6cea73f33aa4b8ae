using System.Numerics;
using System.Numerics.Tensors;

namespace Frugal.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    private static (int Rows, int Cols) RowsCols(StridedView v) => (v.Shape[0], v.Shape[1]);

    /// <inheritdoc/>
    public void Softmax(StridedView x, StridedView y, bool log)
        => Dispatch("Softmax", x.DType, () => SoftmaxT<float>(x, y, log), () => SoftmaxT<double>(x, y, log));

    private static void SoftmaxT<T>(StridedView xv, StridedView yv, bool log) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (rows, cols) = RowsCols(xv);
        T* x0 = P<T>(xv), y0 = P<T>(yv);
        StridedLoop.ForRows(rows, cols, (r0, r1) =>
        {
            for (var r = r0; r < r1; r++)
            {
                var x = new ReadOnlySpan<T>(x0 + r * cols, cols);
                var y = new Span<T>(y0 + r * cols, cols);
                var max = TensorPrimitives.Max(x);
                TensorPrimitives.Subtract(x, max, y);
                if (log)
                {
                    // log-softmax = (x - max) - log Σ exp(x - max), computed without overwriting y first.
                    var sum = T.Zero;
                    foreach (var v in y)
                        sum += T.Exp(v);
                    TensorPrimitives.Subtract(y, T.Log(sum), y);
                }
                else
                {
                    TensorPrimitives.Exp(y, y);
                    TensorPrimitives.Divide(y, TensorPrimitives.Sum<T>(y), y);
                }
            }
        });
    }

    /// <inheritdoc/>
    public void SoftmaxBackward(StridedView y, StridedView dy, StridedView dx, bool log)
        => Dispatch("SoftmaxBackward", y.DType, () => SoftmaxBackwardT<float>(y, dy, dx, log), () => SoftmaxBackwardT<double>(y, dy, dx, log));

    private static void SoftmaxBackwardT<T>(StridedView yv, StridedView dyv, StridedView dxv, bool log) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (rows, cols) = RowsCols(yv);
        T* y0 = P<T>(yv), g0 = P<T>(dyv), d0 = P<T>(dxv);
        StridedLoop.ForRows(rows, cols, (r0, r1) =>
        {
            for (var r = r0; r < r1; r++)
            {
                var y = new ReadOnlySpan<T>(y0 + r * cols, cols);
                var g = new ReadOnlySpan<T>(g0 + r * cols, cols);
                var d = new Span<T>(d0 + r * cols, cols);
                if (log)
                {
                    // dx = dy - softmax · Σ dy
                    var s = TensorPrimitives.Sum(g);
                    TensorPrimitives.Exp(y, d);
                    TensorPrimitives.Multiply(d, -s, d);
                    TensorPrimitives.Add(d, g, d);
                }
                else
                {
                    // dx = y · (dy - Σ dy·y)
                    var s = TensorPrimitives.Dot(g, y);
                    TensorPrimitives.Subtract(g, s, d);
                    TensorPrimitives.Multiply(d, y, d);
                }
            }
        });
    }

    /// <inheritdoc/>
    public void CrossEntropy(StridedView logits, StridedView targets, StridedView loss, int ignoreIndex)
        => Dispatch("CrossEntropy", logits.DType, () => CrossEntropyT<float>(logits, targets, loss, ignoreIndex), () => CrossEntropyT<double>(logits, targets, loss, ignoreIndex));

    private static T LogSumExp<T>(ReadOnlySpan<T> x) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var max = TensorPrimitives.Max(x);
        var sum = T.Zero;
        foreach (var v in x)
            sum += T.Exp(v - max);
        return max + T.Log(sum);
    }

    private static void CrossEntropyT<T>(StridedView lv, StridedView tv, StridedView outv, int ignoreIndex) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (rows, cols) = RowsCols(lv);
        T* l0 = P<T>(lv), o = P<T>(outv);
        var t = (int*)tv.Data;
        StridedLoop.ForRows(rows, cols, (r0, r1) =>
        {
            for (var r = r0; r < r1; r++)
            {
                var x = new ReadOnlySpan<T>(l0 + r * cols, cols);
                o[r] = t[r] == ignoreIndex ? T.Zero : LogSumExp(x) - x[t[r]];
            }
        });
    }

    /// <inheritdoc/>
    public void CrossEntropyBackward(StridedView logits, StridedView targets, StridedView dloss, StridedView dlogits, int ignoreIndex)
        => Dispatch("CrossEntropyBackward", logits.DType, () => CrossEntropyBackwardT<float>(logits, targets, dloss, dlogits, ignoreIndex), () => CrossEntropyBackwardT<double>(logits, targets, dloss, dlogits, ignoreIndex));

    private static void CrossEntropyBackwardT<T>(StridedView lv, StridedView tv, StridedView gv, StridedView dv, int ignoreIndex) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (rows, cols) = RowsCols(lv);
        T* l0 = P<T>(lv), g = P<T>(gv), d0 = P<T>(dv);
        var t = (int*)tv.Data;
        StridedLoop.ForRows(rows, cols, (r0, r1) =>
        {
            for (var r = r0; r < r1; r++)
            {
                var x = new ReadOnlySpan<T>(l0 + r * cols, cols);
                var d = new Span<T>(d0 + r * cols, cols);
                if (t[r] == ignoreIndex)
                {
                    d.Clear();
                    continue;
                }
                var lse = LogSumExp(x);
                TensorPrimitives.Subtract(x, lse, d);
                TensorPrimitives.Exp(d, d);
                d[t[r]] -= T.One;
                TensorPrimitives.Multiply(d, g[r], d);
            }
        });
    }

    /// <inheritdoc/>
    public void LayerNorm(StridedView x, StridedView gamma, StridedView beta, double eps, StridedView y, StridedView mean, StridedView rstd)
        => Dispatch("LayerNorm", x.DType, () => LayerNormT<float>(x, gamma, beta, eps, y, mean, rstd), () => LayerNormT<double>(x, gamma, beta, eps, y, mean, rstd));

    private static void LayerNormT<T>(StridedView xv, StridedView gv, StridedView bv, double eps, StridedView yv, StridedView mv, StridedView rv)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (rows, cols) = RowsCols(xv);
        T* x0 = P<T>(xv), y0 = P<T>(yv), m = P<T>(mv), rs = P<T>(rv), gamma = P<T>(gv), beta = P<T>(bv);
        var e = T.CreateTruncating(eps);
        var n = T.CreateTruncating(cols);
        StridedLoop.ForRows(rows, cols, (r0, r1) =>
        {
            for (var r = r0; r < r1; r++)
            {
                var x = new ReadOnlySpan<T>(x0 + r * cols, cols);
                var y = new Span<T>(y0 + r * cols, cols);
                var mu = TensorPrimitives.Sum(x) / n;
                TensorPrimitives.Subtract(x, mu, y);
                var variance = TensorPrimitives.SumOfSquares<T>(y) / n;
                var inv = T.One / T.Sqrt(variance + e);
                m[r] = mu;
                rs[r] = inv;
                TensorPrimitives.Multiply(y, inv, y);
                if (gamma != null)
                    TensorPrimitives.Multiply(y, new ReadOnlySpan<T>(gamma, cols), y);
                if (beta != null)
                    TensorPrimitives.Add(y, new ReadOnlySpan<T>(beta, cols), y);
            }
        });
    }

    /// <inheritdoc/>
    public void LayerNormBackward(StridedView x, StridedView gamma, StridedView mean, StridedView rstd, StridedView dy, StridedView dx, StridedView dgamma, StridedView dbeta)
        => Dispatch("LayerNormBackward", x.DType, () => LayerNormBackwardT<float>(x, gamma, mean, rstd, dy, dx, dgamma, dbeta), () => LayerNormBackwardT<double>(x, gamma, mean, rstd, dy, dx, dgamma, dbeta));

    private static void LayerNormBackwardT<T>(StridedView xv, StridedView gv, StridedView mv, StridedView rv, StridedView dyv, StridedView dxv, StridedView dgv, StridedView dbv)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (rows, cols) = RowsCols(xv);
        T* x0 = P<T>(xv), gamma = P<T>(gv), m = P<T>(mv), rs = P<T>(rv), g0 = P<T>(dyv), d0 = P<T>(dxv), dg = P<T>(dgv), db = P<T>(dbv);
        var n = T.CreateTruncating(cols);
        StridedLoop.ForRows(rows, cols, (r0, r1) =>
        {
            var xhat = new T[cols];
            var dxhat = new T[cols];
            for (var r = r0; r < r1; r++)
            {
                var x = new ReadOnlySpan<T>(x0 + r * cols, cols);
                var g = new ReadOnlySpan<T>(g0 + r * cols, cols);
                TensorPrimitives.Subtract(x, m[r], xhat);
                TensorPrimitives.Multiply(xhat, rs[r], xhat);
                if (gamma != null)
                    TensorPrimitives.Multiply(g, new ReadOnlySpan<T>(gamma, cols), dxhat);
                else
                    g.CopyTo(dxhat);
                var meanD = TensorPrimitives.Sum<T>(dxhat) / n;
                var meanDx = TensorPrimitives.Dot<T>(dxhat, xhat) / n;
                var d = new Span<T>(d0 + r * cols, cols);
                // dx = rstd · (dxhat - mean(dxhat) - xhat · mean(dxhat · xhat))
                for (var i = 0; i < cols; i++)
                    d[i] = rs[r] * (dxhat[i] - meanD - xhat[i] * meanDx);
            }
        });
        if (dg == null && db == null)
            return;
        // Parameter gradients sum over rows: a fixed number of row ranges (not the thread count, so the sums are the
        // same on any machine), each summed row after row into its own partial vectors, then the partials in order.
        var parts = (int)Math.Min(rows, LayerNormGradientParts);
        var partial = new T[parts * 2L * cols];
        CpuThreads.For(parts, part =>
        {
            var sg = partial.AsSpan((int)(part * 2L * cols), cols);
            var sb = partial.AsSpan((int)((part * 2L + 1) * cols), cols);
            var xhat = new T[cols];
            for (var r = (long)rows * part / parts; r < (long)rows * (part + 1) / parts; r++)
            {
                var g = new ReadOnlySpan<T>(g0 + r * cols, cols);
                TensorPrimitives.Subtract(new ReadOnlySpan<T>(x0 + r * cols, cols), m[r], xhat);
                TensorPrimitives.Multiply(xhat, rs[r], xhat);
                TensorPrimitives.MultiplyAdd(g, xhat, sg, sg);
                TensorPrimitives.Add(sb, g, sb);
            }
        });
        for (var part = 1; part < parts; part++)
        {
            TensorPrimitives.Add(partial.AsSpan(0, 2 * cols), partial.AsSpan((int)(part * 2L * cols), 2 * cols), partial.AsSpan(0, 2 * cols));
        }
        if (dg != null)
            partial.AsSpan(0, cols).CopyTo(new Span<T>(dg, cols));
        if (db != null)
            partial.AsSpan(cols, cols).CopyTo(new Span<T>(db, cols));
    }

    /// <summary>Row ranges of LayerNorm's parameter-gradient sums (see <see cref="LayerNormBackwardT{T}"/>).</summary>
    private const int LayerNormGradientParts = 16;

    /// <inheritdoc/>
    public void IndexSelect(StridedView src, int axis, StridedView index, StridedView dst)
    {
        var size = src.DType.SizeOf();
        var (outer, inner) = src.AroundAxis(axis);
        int n = index.Shape[0], extent = src.Shape[axis];
        var idx = (int*)index.Data;
        byte* s = (byte*)src.Data, d = (byte*)dst.Data;
        var chunk = (long)inner * size;
        StridedLoop.ForRows(outer * n, inner, (r0, r1) =>
        {
            for (var r = r0; r < r1; r++)
            {
                long o = r / n, i = r % n;
                var from = s + ((o * extent) + idx[i]) * chunk;
                Buffer.MemoryCopy(from, d + r * chunk, chunk, chunk);
            }
        });
    }

    /// <inheritdoc/>
    public void IndexAdd(StridedView src, int axis, StridedView index, StridedView dst)
        => Dispatch("IndexAdd", src.DType, () => IndexAddT<float>(src, axis, index, dst), () => IndexAddT<double>(src, axis, index, dst));

    private static void IndexAddT<T>(StridedView sv, int axis, StridedView iv, StridedView dv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (outer, inner) = dv.AroundAxis(axis);
        int n = iv.Shape[0], extent = dv.Shape[axis];
        var idx = (int*)iv.Data;
        T* s = P<T>(sv), d = P<T>(dv);
        // Parallel over the inner extent (columns): repeated indices then add in index order, deterministically.
        StridedLoop.ForRows(inner, outer * n, (c0, c1) =>
        {
            var w = (int)(c1 - c0);
            for (long o = 0; o < outer; o++)
            {
                for (var i = 0; i < n; i++)
                {
                    var from = new ReadOnlySpan<T>(s + ((o * n) + i) * inner + c0, w);
                    var to = new Span<T>(d + ((o * extent) + idx[i]) * inner + c0, w);
                    TensorPrimitives.Add(to, from, to);
                }
            }
        });
    }

}
