// Convolution as im2col + GEMM (the GEMM runs in cuBLAS) and pooling. Every output element is written by one
// thread and every sum runs in the CPU's order. CPU twins: CpuBackend.Conv.cs.
#include "common.cuh"

// cols [C·KH·KW, b·OH·OW] from images n0 .. n0 + b of x [N, C, H, W] (zero where the window reads padding).
template <typename T>
__device__ void im2col(const T* x, Window g, int b, T* cols) {
    i64 ohw = (i64)g.out_h * g.out_w, row_len = b * ohw;
    FOR_EACH_ELEMENT(e, (i64)g.c * g.kh * g.kw * row_len) {
        i64 row = e / row_len, col = e % row_len;
        int kw = (int)(row % g.kw), kh = (int)(row / g.kw % g.kh), ch = (int)(row / ((i64)g.kw * g.kh));
        int i = (int)(col / ohw), oh = (int)(col % ohw / g.out_w), ow = (int)(col % g.out_w);
        int ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h, iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        cols[e] = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w ? x[(((i64)i * g.c + ch) * g.h + ih) * g.w + iw] : T(0);
    }
}

// dx (b images) = the adjoint of im2col: each input pixel sums the column entries that read it, kernel offsets in
// row-major order.
template <typename T>
__device__ void col2im(const T* cols, Window g, int b, T* dx) {
    i64 ohw = (i64)g.out_h * g.out_w, row_len = b * ohw;
    FOR_EACH_ELEMENT(e, (i64)b * g.c * g.h * g.w) {
        int iw = (int)(e % g.w), ih = (int)(e / g.w % g.h), ch = (int)(e / ((i64)g.w * g.h) % g.c);
        int i = (int)(e / ((i64)g.w * g.h * g.c));
        T acc = T(0);
        for (int kh = 0; kh < g.kh; ++kh) {
            int th = ih + g.pad_h - kh * g.dilation_h;
            if (th < 0 || th % g.stride_h != 0 || th / g.stride_h >= g.out_h) continue;
            for (int kw = 0; kw < g.kw; ++kw) {
                int tw = iw + g.pad_w - kw * g.dilation_w;
                if (tw < 0 || tw % g.stride_w != 0 || tw / g.stride_w >= g.out_w) continue;
                i64 row = ((i64)ch * g.kh + kh) * g.kw + kw;
                acc += cols[row * row_len + i * ohw + (i64)(th / g.stride_h) * g.out_w + tw / g.stride_w];
            }
        }
        dx[e] = acc;
    }
}

// y[n0 + i, oc, :] = o[oc, i, :] (+ bias[oc]).
template <typename T>
__device__ void conv_output(const T* o, const T* bias, Window g, int n0, int b, T* y) {
    i64 ohw = (i64)g.out_h * g.out_w;
    FOR_EACH_ELEMENT(e, (i64)b * g.out_c * ohw) {
        i64 p = e % ohw, oc = e / ohw % g.out_c, i = e / (ohw * g.out_c);
        y[(((n0 + i) * g.out_c) + oc) * ohw + p] = o[(oc * b + i) * ohw + p] + (bias ? bias[oc] : T(0));
    }
}

// gathered[oc, i, :] = dy[n0 + i, oc, :].
template <typename T>
__device__ void gather_grad(const T* dy, Window g, int n0, int b, T* gathered) {
    i64 ohw = (i64)g.out_h * g.out_w;
    FOR_EACH_ELEMENT(e, (i64)b * g.out_c * ohw) {
        i64 p = e % ohw, i = e / ohw % b, oc = e / (ohw * b);
        gathered[e] = dy[(((n0 + i) * g.out_c) + oc) * ohw + p];
    }
}

// dbias[oc] (+)= Σ gathered[oc, :]: one thread per channel, in order.
template <typename T>
__device__ void bias_grad(const T* gathered, i64 length, int out_c, int accumulate, T* dbias) {
    FOR_EACH_ELEMENT(oc, (i64)out_c) {
        T s = T(0);
        for (i64 j = 0; j < length; ++j) s += gathered[oc * length + j];
        dbias[oc] = accumulate ? dbias[oc] + s : s;
    }
}

// Max pooling: y and the flat in-plane index of the maximum (first one; a NaN wins).
template <typename T>
__device__ void maxpool(const T* x, Window g, T* y, int* argmax) {
    i64 ohw = (i64)g.out_h * g.out_w;
    FOR_EACH_ELEMENT(o, (i64)g.n * g.c * ohw) {
        i64 plane = o / ohw;
        int oh = (int)(o % ohw / g.out_w), ow = (int)(o % g.out_w);
        const T* xp = x + plane * g.h * g.w;
        T best = -fr_infinity<T>();
        int at = -1;
        for (int kh = 0; kh < g.kh; ++kh) {
            int ih = oh * g.stride_h - g.pad_h + kh;
            if (ih < 0 || ih >= g.h) continue;
            for (int kw = 0; kw < g.kw; ++kw) {
                int iw = ow * g.stride_w - g.pad_w + kw;
                if (iw < 0 || iw >= g.w) continue;
                T v = xp[ih * g.w + iw];
                if (at < 0 || v > best || v != v) { best = v; at = ih * g.w + iw; }
            }
        }
        y[o] = best;
        argmax[o] = at;
    }
}

// dx plane by plane (one thread each), adding dy in output order as the CPU does.
template <typename T>
__device__ void maxpool_backward(const T* dy, const int* argmax, Window g, T* dx) {
    i64 hw = (i64)g.h * g.w, ohw = (i64)g.out_h * g.out_w;
    FOR_EACH_ELEMENT(plane, (i64)g.n * g.c) {
        T* d = dx + plane * hw;
        for (i64 k = 0; k < hw; ++k) d[k] = T(0);
        for (i64 o = 0; o < ohw; ++o) d[argmax[plane * ohw + o]] += dy[plane * ohw + o];
    }
}

// Average pooling over KH·KW (padding counts as zeros).
template <typename T>
__device__ void avgpool(const T* x, Window g, T* y) {
    i64 ohw = (i64)g.out_h * g.out_w;
    T inv = T(1) / T(g.kh * g.kw);
    FOR_EACH_ELEMENT(o, (i64)g.n * g.c * ohw) {
        i64 plane = o / ohw;
        int oh = (int)(o % ohw / g.out_w), ow = (int)(o % g.out_w);
        const T* xp = x + plane * g.h * g.w;
        T acc = T(0);
        for (int kh = 0; kh < g.kh; ++kh) {
            int ih = oh * g.stride_h - g.pad_h + kh;
            if (ih < 0 || ih >= g.h) continue;
            for (int kw = 0; kw < g.kw; ++kw) {
                int iw = ow * g.stride_w - g.pad_w + kw;
                if (iw >= 0 && iw < g.w) acc += xp[ih * g.w + iw];
            }
        }
        y[o] = acc * inv;
    }
}

template <typename T>
__device__ void avgpool_backward(const T* dy, Window g, T* dx) {
    i64 hw = (i64)g.h * g.w, ohw = (i64)g.out_h * g.out_w;
    T inv = T(1) / T(g.kh * g.kw);
    FOR_EACH_ELEMENT(plane, (i64)g.n * g.c) {
        T* d = dx + plane * hw;
        for (i64 k = 0; k < hw; ++k) d[k] = T(0);
        for (int oh = 0; oh < g.out_h; ++oh)
            for (int ow = 0; ow < g.out_w; ++ow) {
                T share = dy[plane * ohw + (i64)oh * g.out_w + ow] * inv;
                for (int kh = 0; kh < g.kh; ++kh) {
                    int ih = oh * g.stride_h - g.pad_h + kh;
                    if (ih < 0 || ih >= g.h) continue;
                    for (int kw = 0; kw < g.kw; ++kw) {
                        int iw = ow * g.stride_w - g.pad_w + kw;
                        if (iw >= 0 && iw < g.w) d[ih * g.w + iw] += share;
                    }
                }
            }
    }
}

#define FRUGAL_CONV_ENTRIES(T, S)                                                                             \
    extern "C" __global__ void im2col_##S(const T* x, Window g, int b, T* cols) { im2col(x, g, b, cols); }  \
    extern "C" __global__ void col2im_##S(const T* cols, Window g, int b, T* dx) { col2im(cols, g, b, dx); } \
    extern "C" __global__ void conv_output_##S(const T* o, const T* bias, Window g, int n0, int b, T* y) {   \
        conv_output(o, bias, g, n0, b, y);                                                                   \
    }                                                                                                        \
    extern "C" __global__ void gather_grad_##S(const T* dy, Window g, int n0, int b, T* gathered) {          \
        gather_grad(dy, g, n0, b, gathered);                                                                 \
    }                                                                                                        \
    extern "C" __global__ void bias_grad_##S(const T* gathered, i64 length, int out_c, int accumulate,       \
                                             T* dbias) {                                                    \
        bias_grad(gathered, length, out_c, accumulate, dbias);                                               \
    }                                                                                                        \
    extern "C" __global__ void maxpool_##S(const T* x, Window g, T* y, int* argmax) {                        \
        maxpool(x, g, y, argmax);                                                                            \
    }                                                                                                        \
    extern "C" __global__ void maxpool_backward_##S(const T* dy, const int* argmax, Window g, T* dx) {       \
        maxpool_backward(dy, argmax, g, dx);                                                                 \
    }                                                                                                        \
    extern "C" __global__ void avgpool_##S(const T* x, Window g, T* y) { avgpool(x, g, y); }                 \
    extern "C" __global__ void avgpool_backward_##S(const T* dy, Window g, T* dx) { avgpool_backward(dy, g, dx); }

FRUGAL_CONV_ENTRIES(float, f32)
FRUGAL_CONV_ENTRIES(double, f64)
