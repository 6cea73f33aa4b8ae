// Conversion between any two dtypes over contiguous buffers, through double, with the CPU's rounding
// (engine/Backends/DTypeCodec.cs): floats round to nearest even (BF16 once from double, via round-to-odd float),
// integers round half to even and saturate.
#include "common.cuh"

__device__ __forceinline__ double half_to_double(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short double_to_half(double v) {
    unsigned short h;
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(v));
    return h;
}

__device__ __forceinline__ unsigned short float_to_bf16(float f) {
    unsigned int u = fr_float_bits(f);
    if (f != f) return (unsigned short)((u >> 16) | 0x40);
    return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

__device__ __forceinline__ unsigned short double_to_bf16(double v) {
    float f = (float)v;
    if (f != f || f - f != 0.0f || (double)f == v) return float_to_bf16(f);
    unsigned int u = fr_float_bits(f);
    if ((u & 1) == 0) u = fr_abs((double)f) > fr_abs(v) ? u - 1 : u + 1;
    return float_to_bf16(fr_bits_float(u));
}

__device__ __forceinline__ double clamp_round(double v, double lo, double hi) {
    double r = rint(v);
    return r < lo ? lo : r > hi ? hi : r;
}

__device__ double read_as_double(const unsigned char* p, int t, i64 i) {
    switch (t) {
        case DTYPE_F32: return ((const float*)p)[i];
        case DTYPE_F64: return ((const double*)p)[i];
        case DTYPE_F16: return half_to_double(((const unsigned short*)p)[i]);
        case DTYPE_BF16: return fr_bits_float((unsigned int)((const unsigned short*)p)[i] << 16);
        case DTYPE_I8: return ((const signed char*)p)[i];
        case DTYPE_U8: return p[i];
        default: return ((const int*)p)[i];  // DTYPE_I32
    }
}

__device__ void write_from_double(unsigned char* p, int t, i64 i, double v) {
    switch (t) {
        case DTYPE_F32: ((float*)p)[i] = (float)v; break;
        case DTYPE_F64: ((double*)p)[i] = v; break;
        case DTYPE_F16: ((unsigned short*)p)[i] = double_to_half(v); break;
        case DTYPE_BF16: ((unsigned short*)p)[i] = double_to_bf16(v); break;
        case DTYPE_I8: ((signed char*)p)[i] = (signed char)clamp_round(v, -128.0, 127.0); break;
        case DTYPE_U8: p[i] = (unsigned char)clamp_round(v, 0.0, 255.0); break;
        default: ((int*)p)[i] = (int)clamp_round(v, -2147483648.0, 2147483647.0); break;  // DTYPE_I32
    }
}

extern "C" __global__ void cast(const unsigned char* src, int src_type, unsigned char* dst, int dst_type, i64 n) {
    FOR_EACH_ELEMENT(i, n) write_from_double(dst, dst_type, i, read_as_double(src, src_type, i));
}
