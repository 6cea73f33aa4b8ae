using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Numerics;
using System.Numerics.Tensors;

using Frugal.Memory;

namespace Frugal.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // Convolution as GEMM, one image at a time: cols [C·KH·KW, OH·OW] holds the image's patches (a few hundred
    // kilobytes, so it stays in the core's L2 from im2col to the GEMM), then y_n = W·cols, dW += dY_n·colsᵀ and
    // dcols = Wᵀ·dY_n. Threads take groups of images, each group with its own column buffer (Workspace).
    /// <summary>At most this many groups of images: fixed by the batch, not the thread count, so the weight
    /// gradient (one partial sum per group, added in group order) is the same on any machine.</summary>
    private const int ConvGroups = 16;

    /// <inheritdoc/>
    public void Conv2d(in Conv2dArgs args, StridedView x, StridedView w, StridedView bias, StridedView y)
    {
        var a = args;
        Dispatch("Conv2d", x.DType, () => Conv2dT<float>(a, x, w, bias, y), () => Conv2dT<double>(a, x, w, bias, y));
    }

    private void Conv2dT<T>(Conv2dArgs a, StridedView xv, StridedView wv, StridedView bv, StridedView yv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        T* x = P<T>(xv), w = P<T>(wv), y = P<T>(yv), bias = P<T>(bv);
        ForEachImage<T>(a, 0, (n, c, _) =>
        {
            Im2Col(a, x + (long)n * a.C * a.H * a.W, 1, c);
            var yn = y + (long)n * a.OutC * ohw;
            GemmT(false, false, a.OutC, ohw, ckk, w, ckk, c, ohw, T.Zero, yn, ohw);
            if (bias != null)
            {
                for (var oc = 0; oc < a.OutC; oc++)
                    TensorPrimitives.Add(new ReadOnlySpan<T>(yn + (long)oc * ohw, ohw), bias[oc], new Span<T>(yn + (long)oc * ohw, ohw));
            }
        });
    }

    /// <summary>Runs <paramref name="body"/>(image, columns, partial) for every image, groups of images in parallel:
    /// each group has a column buffer [C·KH·KW, OH·OW] and, when <paramref name="partialElements"/> is positive, a
    /// zeroed buffer of that many elements of its own; returns the partial buffers (Workspace, group after group) for
    /// the caller to reduce and release, or null.</summary>
    private DeviceBuffer? ForEachImage<T>(in Conv2dArgs a, long partialElements, ImageBody<T> body) where T : unmanaged
    {
        var (geometry, groups) = (a, Math.Min(a.N, ConvGroups));
        long colElements = (long)a.C * a.KH * a.KW * a.OutH * a.OutW;
        var cols = _device.Allocator.Allocate(groups * colElements * sizeof(T), MemoryCategory.Workspace, "conv2d.columns");
        DeviceBuffer? partial = null;
        try
        {
            if (partialElements > 0)
            {
                partial = _device.Allocator.Allocate(groups * partialElements * sizeof(T), MemoryCategory.Workspace, "conv2d.partial");
                new Span<T>((void*)partial.Address, checked((int)(groups * partialElements))).Clear();
            }
            T* c0 = (T*)cols.Address, p0 = partial is null ? null : (T*)partial.Address;
            CpuThreads.For(groups, g =>
            {
                for (var n = geometry.N * g / groups; n < geometry.N * (g + 1) / groups; n++)
                    body(n, c0 + g * colElements, p0 == null ? null : p0 + g * partialElements);
            });
            return partial;
        }
        catch
        {
            partial?.Release();
            throw;
        }
        finally
        {
            cols.Release();
        }
    }

    /// <summary>The work of one image in <see cref="ForEachImage{T}"/>: its index, its group's columns and partial sums.</summary>
    private delegate void ImageBody<T>(int image, T* columns, T* partial) where T : unmanaged;

    /// <inheritdoc/>
    public void Im2Col(in Conv2dArgs args, StridedView x, int n0, int images, StridedView cols)
    {
        var (a, b) = (args, images);
        Dispatch("Im2Col", x.DType,
            () => Im2Col(a, P<float>(x) + (long)n0 * a.C * a.H * a.W, b, P<float>(cols)),
            () => Im2Col(a, P<double>(x) + (long)n0 * a.C * a.H * a.W, b, P<double>(cols)));
    }

    /// <inheritdoc/>
    public void Col2Im(in Conv2dArgs args, StridedView cols, int n0, int images, StridedView dx)
    {
        var (a, b) = (args, images);
        Dispatch("Col2Im", cols.DType,
            () => Col2Im(a, P<float>(cols), b, P<float>(dx) + (long)n0 * a.C * a.H * a.W),
            () => Col2Im(a, P<double>(cols), b, P<double>(dx) + (long)n0 * a.C * a.H * a.W));
    }

    /// <inheritdoc/>
    public void Conv2dBackwardInput(in Conv2dArgs args, StridedView dy, StridedView w, StridedView dx)
    {
        var a = args;
        Dispatch("Conv2dBackwardInput", dy.DType, () => Conv2dBackwardInputT<float>(a, dy, w, dx), () => Conv2dBackwardInputT<double>(a, dy, w, dx));
    }

    private void Conv2dBackwardInputT<T>(Conv2dArgs a, StridedView dyv, StridedView wv, StridedView dxv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        T* dy = P<T>(dyv), w = P<T>(wv), dx = P<T>(dxv);
        ForEachImage<T>(a, 0, (n, c, _) =>
        {
            GemmT(true, false, ckk, ohw, a.OutC, w, ckk, dy + (long)n * a.OutC * ohw, ohw, T.Zero, c, ohw);
            Col2Im(a, c, 1, dx + (long)n * a.C * a.H * a.W);
        });
    }

    /// <inheritdoc/>
    public void Conv2dBackwardWeight(in Conv2dArgs args, StridedView x, StridedView dy, StridedView dw, StridedView dbias)
    {
        var a = args;
        Dispatch("Conv2dBackwardWeight", x.DType, () => Conv2dBackwardWeightT<float>(a, x, dy, dw, dbias), () => Conv2dBackwardWeightT<double>(a, x, dy, dw, dbias));
    }

    private void Conv2dBackwardWeightT<T>(Conv2dArgs a, StridedView xv, StridedView dyv, StridedView dwv, StridedView dbv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        T* x = P<T>(xv), dy = P<T>(dyv), dw = P<T>(dwv), db = P<T>(dbv);
        // Per group: dW partial [OutC, C·KH·KW], then the bias partial [OutC].
        long size = (long)a.OutC * ckk, per = size + a.OutC;
        var partial = ForEachImage<T>(a, per, (n, c, part) =>
        {
            var g = dy + (long)n * a.OutC * ohw;
            Im2Col(a, x + (long)n * a.C * a.H * a.W, 1, c);
            GemmT(false, true, a.OutC, ckk, ohw, g, ohw, c, ohw, T.One, part, ckk);
            for (var oc = 0; oc < a.OutC; oc++)
                part[size + oc] += TensorPrimitives.Sum(new ReadOnlySpan<T>(g + (long)oc * ohw, ohw));
        })!;
        try
        {
            var sums = (T*)partial.Address;
            var groups = Math.Min(a.N, ConvGroups);
            for (var i = 1; i < groups; i++)
                TensorPrimitives.Add(new ReadOnlySpan<T>(sums, (int)per), new ReadOnlySpan<T>(sums + i * per, (int)per), new Span<T>(sums, (int)per));
            new ReadOnlySpan<T>(sums, (int)size).CopyTo(new Span<T>(dw, (int)size));
            if (db != null)
                new ReadOnlySpan<T>(sums + size, a.OutC).CopyTo(new Span<T>(db, a.OutC));
        }
        finally
        {
            partial.Release();
        }
    }

    private static void GemmT<T>(bool ta, bool tb, int m, int n, int k, T* a, int lda, T* b, int ldb, T beta, T* c, int ldc) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            Cpu.Gemm.Sgemm(ta, tb, m, n, k, 1f, (float*)a, lda, (float*)b, ldb, (float)(object)beta, (float*)c, ldc);
        else
            Cpu.Gemm.Dgemm(ta, tb, m, n, k, 1.0, (double*)a, lda, (double*)b, ldb, (double)(object)beta, (double*)c, ldc);
    }

    /// <summary>Output positions [Lo, Hi) whose input position <c>o·stride - pad + offset</c> lies in [0, inLen).</summary>
    private static (int Lo, int Hi) ValidRange(int outLen, int stride, int pad, int offset, int inLen)
    {
        var first = pad - offset;
        var lo = first <= 0 ? 0 : (first + stride - 1) / stride;
        var last = inLen - 1 + pad - offset;
        var hi = last < 0 ? 0 : last / stride + 1;
        return (Math.Min(lo, outLen), Math.Clamp(hi, Math.Min(lo, outLen), outLen));
    }

    /// <summary>Patches of b images into cols [C·KH·KW, b·OH·OW] (zero where the window reads padding).</summary>
    private static void Im2Col<T>(Conv2dArgs a, T* x, int b, T* cols) where T : unmanaged, INumberBase<T>
    {
        CpuThreads.For(a.C * a.KH * a.KW, row =>
        {
            // Geometry in locals: the inner loops run per feature-map row, a few elements long.
            int outH = a.OutH, outW = a.OutW, ohw = outH * outW, w = a.W, plane = a.H * w, strideH = a.StrideH, strideW = a.StrideW;
            int kw = row % a.KW, kh = row / a.KW % a.KH, ch = row / (a.KW * a.KH);
            var (hLo, hHi) = ValidRange(outH, strideH, a.PadH, kh * a.DilationH, a.H);
            var (wLo, wHi) = ValidRange(outW, strideW, a.PadW, kw * a.DilationW, w);
            int span = wHi - wLo, ih0 = hLo * strideH - a.PadH + kh * a.DilationH, iw0 = wLo * strideW - a.PadW + kw * a.DilationW;
            var dst = cols + (long)row * b * ohw;
            for (var i = 0; i < b; i++)
            {
                var src0 = x + ((long)i * a.C + ch) * plane + (long)ih0 * w + iw0;
                var img = dst + (long)i * ohw;
                new Span<T>(img, hLo * outW).Clear();
                new Span<T>(img + hHi * outW, (outH - hHi) * outW).Clear();
                for (var oh = hLo; oh < hHi; oh++)
                {
                    // Rows are a few elements long: no library calls per row.
                    var src = src0 + (long)(oh - hLo) * strideH * w;
                    var d = img + oh * outW;
                    for (var j = 0; j < wLo; j++)
                        d[j] = T.Zero;
                    for (var j = wHi; j < outW; j++)
                        d[j] = T.Zero;
                    if (strideW == 1)
                        CopyRow(src, d + wLo, span);
                    else
                        for (var j = 0; j < span; j++)
                            d[wLo + j] = src[j * strideW];
                }
            }
        });
    }

    /// <summary>Adds cols [C·KH·KW, b·OH·OW] back into b images (dx overwritten): the adjoint of <see cref="Im2Col{T}"/>.</summary>
    private static void Col2Im<T>(Conv2dArgs a, T* cols, int b, T* dx) where T : unmanaged, INumberBase<T>
    {
        // Parallel over (image, channel) planes: each plane is written by one thread, kernel offsets in fixed order.
        CpuThreads.For(b * a.C, p =>
        {
            int outH = a.OutH, outW = a.OutW, w = a.W, strideH = a.StrideH, strideW = a.StrideW, kernelW = a.KW;
            long rowLen = (long)b * outH * outW;
            int i = p / a.C, ch = p % a.C;
            var plane = dx + ((long)i * a.C + ch) * a.H * w;
            new Span<T>(plane, a.H * w).Clear();
            for (var kh = 0; kh < a.KH; kh++)
            {
                var (hLo, hHi) = ValidRange(outH, strideH, a.PadH, kh * a.DilationH, a.H);
                var ih0 = hLo * strideH - a.PadH + kh * a.DilationH;
                for (var kw = 0; kw < kernelW; kw++)
                {
                    var (wLo, wHi) = ValidRange(outW, strideW, a.PadW, kw * a.DilationW, w);
                    int span = wHi - wLo, iw0 = wLo * strideW - a.PadW + kw * a.DilationW;
                    var src = cols + ((long)(ch * a.KH + kh) * kernelW + kw) * rowLen + (long)i * outH * outW + hLo * outW + wLo;
                    var row = plane + (long)ih0 * w + iw0;
                    for (var oh = hLo; oh < hHi; oh++, src += outW, row += strideH * w)
                    {
                        if (strideW == 1)
                            AddRow(row, src, span);
                        else
                            for (var j = 0; j < span; j++)
                                row[j * strideW] += src[j];
                    }
                }
            }
        });
    }

    /// <summary>dst[0..n) += src[0..n) for the short rows of a feature map: whole vectors, a half vector, then the tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow<T>(T* dst, T* src, int n) where T : unmanaged, INumberBase<T>
    {
        var j = 0;
        for (; j + Vector256<T>.Count <= n; j += Vector256<T>.Count)
            Vector256.Store(Vector256.Load(dst + j) + Vector256.Load(src + j), dst + j);
        if (j + Vector128<T>.Count <= n)
        {
            Vector128.Store(Vector128.Load(dst + j) + Vector128.Load(src + j), dst + j);
            j += Vector128<T>.Count;
        }
        for (; j < n; j++)
            dst[j] += src[j];
    }

    /// <summary>dst[0..n) = src[0..n) for the short rows of a feature map (the two do not overlap): whole vectors
    /// and one last vector ending at n, which may overlap the one before; scalars below one vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyRow<T>(T* src, T* dst, int n) where T : unmanaged
    {
        var v = Vector256<T>.Count;
        if (n < v)
        {
            for (var j = 0; j < n; j++)
                dst[j] = src[j];
            return;
        }
        for (var j = 0; j < n - v; j += v)
            Vector256.Store(Vector256.Load(src + j), dst + j);
        Vector256.Store(Vector256.Load(src + n - v), dst + n - v);
    }

    /// <inheritdoc/>
    public void MaxPool2d(in Pool2dArgs args, StridedView x, StridedView y, StridedView argmax)
    {
        var a = args;
        Dispatch("MaxPool2d", x.DType, () => MaxPoolT<float>(a, x, y, argmax), () => MaxPoolT<double>(a, x, y, argmax));
    }

    private static void MaxPoolT<T>(Pool2dArgs a, StridedView xv, StridedView yv, StridedView iv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* x = P<T>(xv), y = P<T>(yv);
        var idx = (int*)iv.Data;
        if (a is { KH: 2, KW: 2, StrideH: 2, StrideW: 2, PadH: 0, PadW: 0 })
        {
            MaxPool2x2<T>(a, x, y, idx);
            return;
        }
        StridedLoop.ForRows((long)a.N * a.C, a.H * a.W, (p0, p1) =>
        {
            // Geometry in locals (the output sizes are computed properties) and each window clipped to the plane
            // once, so the inner loops only compare.
            int h = a.H, w = a.W, outH = a.OutH, outW = a.OutW;
            for (var p = p0; p < p1; p++)
            {
                var plane = x + p * h * w;
                var o = p * outH * outW;
                for (var oh = 0; oh < outH; oh++)
                {
                    int ih0 = oh * a.StrideH - a.PadH, ihLo = Math.Max(ih0, 0), ihHi = Math.Min(ih0 + a.KH, h);
                    for (var ow = 0; ow < outW; ow++, o++)
                    {
                        int iw0 = ow * a.StrideW - a.PadW, iwLo = Math.Max(iw0, 0), iwHi = Math.Min(iw0 + a.KW, w);
                        var best = T.NegativeInfinity;
                        var at = -1;
                        for (var ih = ihLo; ih < ihHi; ih++)
                        {
                            for (var iw = iwLo; iw < iwHi; iw++)
                            {
                                var v = plane[ih * w + iw];
                                if (at < 0 || v > best || T.IsNaN(v))
                                {
                                    best = v;
                                    at = ih * w + iw;
                                }
                            }
                        }
                        y[o] = best;
                        idx[o] = at;
                    }
                }
            }
        });
    }

    /// <summary>The 2×2, stride-2 max pool without padding (every CNN's), without branches on the data: the
    /// larger of each row's pair, then the larger of the two rows, each choice a 0/1 index. Same choices as the
    /// general loop: in row-major order a larger value or a NaN replaces the best so far, so ties keep the first and
    /// the last NaN wins.</summary>
    private static void MaxPool2x2<T>(Pool2dArgs a, T* x, T* y, int* idx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int h = a.H, w = a.W, outH = a.OutH, outW = a.OutW;
        StridedLoop.ForRows((long)a.N * a.C, h * w, (p0, p1) =>
        {
            for (var p = p0; p < p1; p++)
            {
                var plane = x + p * h * w;
                var o = p * outH * outW;
                for (var oh = 0; oh < outH; oh++)
                {
                    var top = 2 * oh * w;
                    T* r0 = plane + top, r1 = r0 + w;
                    for (var ow = 0; ow < outW; ow++, o++)
                    {
                        var c = 2 * ow;
                        var i0 = Later(r0[c], r0[c + 1]);
                        var i1 = Later(r1[c], r1[c + 1]);
                        var down = Later(r0[c + i0], r1[c + i1]);
                        var at = c + i0 + down * (w + i1 - i0);
                        y[o] = r0[at];
                        idx[o] = top + at;
                    }
                }
            }
        });
    }

    /// <summary>1 when <paramref name="next"/> replaces <paramref name="best"/> (larger, or NaN), else 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Later<T>(T best, T next) where T : IFloatingPointIeee754<T>
    {
        var later = (next > best) | T.IsNaN(next);
        return Unsafe.As<bool, byte>(ref later);   // a conditional 0/1 would compile to a branch
    }

    /// <inheritdoc/>
    public void MaxPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView argmax, StridedView dx)
    {
        var a = args;
        Dispatch("MaxPool2dBackward", dy.DType, () => MaxPoolBackwardT<float>(a, dy, argmax, dx), () => MaxPoolBackwardT<double>(a, dy, argmax, dx));
    }

    private static void MaxPoolBackwardT<T>(Pool2dArgs a, StridedView dyv, StridedView iv, StridedView dxv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* dy = P<T>(dyv), dx = P<T>(dxv);
        var idx = (int*)iv.Data;
        int hw = a.H * a.W, ohw = a.OutH * a.OutW;
        StridedLoop.ForRows((long)a.N * a.C, hw, (p0, p1) =>
        {
            for (var p = p0; p < p1; p++)
            {
                var plane = dx + p * hw;
                new Span<T>(plane, hw).Clear();
                for (var o = 0; o < ohw; o++)
                    plane[idx[p * ohw + o]] += dy[p * ohw + o];
            }
        });
    }

    /// <inheritdoc/>
    public void AvgPool2d(in Pool2dArgs args, StridedView x, StridedView y)
    {
        var a = args;
        Dispatch("AvgPool2d", x.DType, () => AvgPoolT<float>(a, x, y, forward: true), () => AvgPoolT<double>(a, x, y, forward: true));
    }

    /// <inheritdoc/>
    public void AvgPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView dx)
    {
        var a = args;
        Dispatch("AvgPool2dBackward", dy.DType, () => AvgPoolT<float>(a, dx, dy, forward: false), () => AvgPoolT<double>(a, dx, dy, forward: false));
    }

    /// <summary>Average pooling forward (y = mean of window of x) or its adjoint (x = Σ windows of y / size),
    /// one loop for both so the window arithmetic exists once.</summary>
    private static void AvgPoolT<T>(Pool2dArgs a, StridedView xv, StridedView yv, bool forward) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* x = P<T>(xv), y = P<T>(yv);
        var inv = T.One / T.CreateTruncating(a.KH * a.KW);
        int h = a.H, w = a.W, hw = h * w, outH = a.OutH, outW = a.OutW, ohw = outH * outW;
        StridedLoop.ForRows((long)a.N * a.C, hw, (p0, p1) =>
        {
            for (var p = p0; p < p1; p++)
            {
                var plane = x + p * hw;
                if (!forward)
                    new Span<T>(plane, hw).Clear();
                var o = p * ohw;
                for (var oh = 0; oh < outH; oh++)
                {
                    int ih0 = oh * a.StrideH - a.PadH, ihLo = Math.Max(ih0, 0), ihHi = Math.Min(ih0 + a.KH, h);
                    for (var ow = 0; ow < outW; ow++, o++)
                    {
                        int iw0 = ow * a.StrideW - a.PadW, iwLo = Math.Max(iw0, 0), iwHi = Math.Min(iw0 + a.KW, w);
                        var acc = T.Zero;
                        var share = forward ? T.Zero : y[o] * inv;
                        for (var ih = ihLo; ih < ihHi; ih++)
                        {
                            for (var iw = iwLo; iw < iwHi; iw++)
                            {
                                if (forward)
                                    acc += plane[ih * w + iw];
                                else
                                    plane[ih * w + iw] += share;
                            }
                        }
                        if (forward)
                            y[o] = acc * inv;
                    }
                }
            }
        });
    }
}
