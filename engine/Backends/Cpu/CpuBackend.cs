using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Frugal.Memory;

namespace Frugal.Backends.Cpu;

/// <summary>The CPU kernel table: vectorised with System.Numerics.Tensors primitives, parallel over row blocks,
/// generic over F32/F64 so the float64 reference runs the same code. Deterministic: each output element is
/// computed by one thread in a fixed order. It is also the reference of the CUDA conformance tests.</summary>
public sealed unsafe partial class CpuBackend(Device device) : IBackend
{
    private readonly Device _device = device;

    /// <inheritdoc/>
    public string Name => "cpu";

    private static T* P<T>(StridedView v) where T : unmanaged => (T*)v.Data;

    private static Span<T> Span<T>(StridedView v) where T : unmanaged => new((void*)v.Data, checked((int)v.Numel));

    private static void RequireFloat(string kernel, StridedView v)
    {
        if (!v.DType.IsComputeType())
            throw new NotSupportedException($"cpu {kernel}: dtype {v.DType.Name()} is a storage type; compute in f32 or f64");
    }

    /// <summary>Calls the F32 or F64 instantiation of a generic kernel.</summary>
    private static void Dispatch(string kernel, DType dtype, Action f32, Action f64)
    {
        switch (dtype)
        {
            case DType.F32: f32(); break;
            case DType.F64: f64(); break;
            default: throw new NotSupportedException($"cpu {kernel}: dtype {dtype.Name()} is a storage type; compute in f32 or f64");
        }
    }

    // ---- memory ----

    /// <inheritdoc/>
    public void Upload(ReadOnlySpan<byte> src, nint dst) => src.CopyTo(new Span<byte>((void*)dst, src.Length));

    /// <inheritdoc/>
    public void Download(nint src, Span<byte> dst) => new ReadOnlySpan<byte>((void*)src, dst.Length).CopyTo(dst);

    /// <inheritdoc/>
    public void Copy(StridedView src, StridedView dst)
    {
        var size = src.DType.SizeOf();
        var plan = StridedLoop.Coalesce(dst.Shape, src.Strides, dst.Strides);
        var len = plan.RowLength;
        int ss = plan.Strides[0][^1], ds = plan.Strides[1][^1];
        var s0 = (byte*)src.Data;
        var d0 = (byte*)dst.Data;
        StridedLoop.ForRows(plan.Rows, len, (r0, r1) =>
        {
            var at = plan.Start(r0);
            for (var r = r0; r < r1; r++, at.Next())
            {
                var s = s0 + at[0] * size;
                var d = d0 + at[1] * size;
                if (ss == 1 && ds == 1)
                {
                    Buffer.MemoryCopy(s, d, (long)len * size, (long)len * size);
                    continue;
                }
                switch (size)
                {
                    case 1: CopyStrided((byte*)s, ss, (byte*)d, ds, len); break;
                    case 2: CopyStrided((short*)s, ss, (short*)d, ds, len); break;
                    case 4: CopyStrided((int*)s, ss, (int*)d, ds, len); break;
                    default: CopyStrided((long*)s, ss, (long*)d, ds, len); break;
                }
            }
        });
    }

    private static void CopyStrided<TE>(TE* s, int ss, TE* d, int ds, int len) where TE : unmanaged
    {
        if (ss == 0 && ds == 1)
        {
            new Span<TE>(d, len).Fill(*s);
            return;
        }
        for (var i = 0; i < len; i++)
            d[(long)i * ds] = s[(long)i * ss];
    }

    /// <inheritdoc/>
    public void Cast(StridedView src, StridedView dst)
    {
        var n = src.Numel;
        if (src.DType == dst.DType)
        {
            Buffer.MemoryCopy((void*)src.Data, (void*)dst.Data, n * src.DType.SizeOf(), n * src.DType.SizeOf());
            return;
        }
        byte* s = (byte*)src.Data, d = (byte*)dst.Data;
        DType st = src.DType, dt = dst.DType;
        StridedLoop.ForRows(n, 1, (i0, i1) =>
        {
            if (CastSpan(st, dt, s + i0 * st.SizeOf(), d + i0 * dt.SizeOf(), (int)(i1 - i0)))
                return;
            for (var i = i0; i < i1; i++)
                DTypeCodec.Write(d, dt, i, DTypeCodec.Read(s, st, i));
        });
    }

    /// <summary>The frequent conversions (8-bit codes, F64, I32) over whole spans through the vector primitives, with
    /// <see cref="DTypeCodec"/>'s rules: round half to even, then saturate (NaN to 0); false for the other pairs.</summary>
    private static bool CastSpan(DType st, DType dt, byte* s, byte* d, int n)
    {
        switch (st, dt)
        {
            case (DType.F32, DType.I8): RoundSaturating(new ReadOnlySpan<float>(s, n), new Span<sbyte>(d, n)); return true;
            case (DType.F32, DType.U8): RoundSaturating(new ReadOnlySpan<float>(s, n), new Span<byte>(d, n)); return true;
            case (DType.F32, DType.I32): RoundSaturating(new ReadOnlySpan<float>(s, n), new Span<int>(d, n)); return true;
            case (DType.I8, DType.F32): Widen(new ReadOnlySpan<sbyte>(s, n), new Span<float>(d, n)); return true;
            case (DType.U8, DType.F32): Widen(new ReadOnlySpan<byte>(s, n), new Span<float>(d, n)); return true;
            case (DType.I32, DType.F32): TensorPrimitives.ConvertTruncating(new ReadOnlySpan<int>(s, n), new Span<float>(d, n)); return true;
            case (DType.F32, DType.F64): TensorPrimitives.ConvertTruncating(new ReadOnlySpan<float>(s, n), new Span<double>(d, n)); return true;
            case (DType.F64, DType.F32): TensorPrimitives.ConvertTruncating(new ReadOnlySpan<double>(s, n), new Span<float>(d, n)); return true;
            default: return false;
        }
    }

    /// <summary>Integers from floats: rounded half to even, then saturated (NaN to 0); 8-bit codes 32 values at a
    /// time in vectors, other integers a stack chunk at a time through the vector primitives.</summary>
    private static void RoundSaturating<TInt>(ReadOnlySpan<float> x, Span<TInt> y) where TInt : unmanaged, IBinaryInteger<TInt>
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated && (typeof(TInt) == typeof(sbyte) || typeof(TInt) == typeof(byte)))
        {
            var signed = typeof(TInt) == typeof(sbyte);
            Vector256<float> lo = Vector256.Create(signed ? -128f : 0f), hi = Vector256.Create(signed ? 127f : 255f);
            fixed (float* px = x)
            fixed (TInt* py = y)
            {
                for (; i + 32 <= x.Length; i += 32)
                {
                    static Vector256<int> Code(float* at, Vector256<float> lo, Vector256<float> hi)
                    {
                        var v = Vector256.Load(at);
                        var r = Vector256.ConditionalSelect(Vector256.Equals(v, v), Vector256.Round(v), Vector256<float>.Zero);
                        return Vector256.ConvertToInt32Native(Vector256.MinNative(Vector256.MaxNative(r, lo), hi));   // no NaN left: the native forms
                    }
                    var p = px + i;
                    var words = Vector256.Narrow(Vector256.Narrow(Code(p, lo, hi), Code(p + 8, lo, hi)), Vector256.Narrow(Code(p + 16, lo, hi), Code(p + 24, lo, hi)));
                    Vector256.Store(words.AsByte(), (byte*)(py + i));
                }
            }
        }
        const int Chunk = 1024;
        Span<float> rounded = stackalloc float[Chunk];
        for (; i < x.Length; i += Chunk)
        {
            var m = Math.Min(Chunk, x.Length - i);
            TensorPrimitives.Round(x.Slice(i, m), rounded[..m]);
            TensorPrimitives.ConvertSaturating<float, TInt>(rounded[..m], y.Slice(i, m));
        }
    }

    /// <summary>Floats from 8-bit codes, a vector of codes at a time (<see cref="Floats{TCode}"/>), then the tail.</summary>
    private static void Widen<TInt>(ReadOnlySpan<TInt> x, Span<float> y) where TInt : unmanaged, IBinaryInteger<TInt>
    {
        var (i, w) = (0, Vector<float>.Count);
        fixed (TInt* px = x)
        fixed (float* py = y)
        {
            for (; Vector.IsHardwareAccelerated && i + Vector<TInt>.Count <= x.Length; i += Vector<TInt>.Count)
            {
                var (a, b, c, d) = Floats(Vector.Load(px + i));
                Vector.Store(a, py + i);
                Vector.Store(b, py + i + w);
                Vector.Store(c, py + i + 2 * w);
                Vector.Store(d, py + i + 3 * w);
            }
        }
        for (; i < x.Length; i++)
            y[i] = float.CreateTruncating(x[i]);
    }

    /// <inheritdoc/>
    public void Fill(StridedView dst, double value)
    {
        if (!dst.IsContiguous)
        {
            var plan = StridedLoop.Coalesce(dst.Shape, dst.Strides);
            var b = (byte*)dst.Data;
            var size = dst.DType.SizeOf();
            var at = plan.Start(0);
            for (long r = 0; r < plan.Rows; r++, at.Next())
            {
                var off = at[0];
                for (var i = 0; i < plan.RowLength; i++)
                    DTypeCodec.Write(b + (off + (long)i * plan.Strides[0][^1]) * size, dst.DType, 0, value);
            }
            return;
        }
        switch (dst.DType)
        {
            case DType.F32: Span<float>(dst).Fill((float)value); break;
            case DType.F64: Span<double>(dst).Fill(value); break;
            default:
                var n = dst.Numel;
                for (long i = 0; i < n; i++)
                    DTypeCodec.Write((byte*)dst.Data, dst.DType, i, value);
                break;
        }
    }

    // ---- matrix products ----

    /// <inheritdoc/>
    public void Gemm(in GemmArgs g, DType dtype, nint a, nint b, nint c)
    {
        switch (dtype)
        {
            case DType.F32:
                Cpu.Gemm.SgemmBatched(g.TransA, g.TransB, g.Batch, g.M, g.N, g.K, (float)g.Alpha, (float*)a, g.Lda, g.StrideA,
                    (float*)b, g.Ldb, g.StrideB, (float)g.Beta, (float*)c, g.Ldc, g.StrideC);
                break;
            case DType.F64:
                Cpu.Gemm.DgemmBatched(g.TransA, g.TransB, g.Batch, g.M, g.N, g.K, g.Alpha, (double*)a, g.Lda, g.StrideA,
                    (double*)b, g.Ldb, g.StrideB, g.Beta, (double*)c, g.Ldc, g.StrideC);
                break;
            default:
                throw new NotSupportedException($"cpu Gemm: dtype {dtype.Name()} is a storage type; compute in f32 or f64");
        }
    }

    // ---- randomness ----

    /// <inheritdoc/>
    public void Dropout(StridedView x, double p, ulong seed, ulong offset, StridedView y, StridedView mask)
        => Dispatch("Dropout", x.DType, () => DropoutT<float>(x, p, seed, offset, y, mask), () => DropoutT<double>(x, p, seed, offset, y, mask));

    private static void DropoutT<T>(StridedView xv, double p, ulong seed, ulong offset, StridedView yv, StridedView mv)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* x = P<T>(xv), y = P<T>(yv);
        var m = (byte*)mv.Data;
        var scale = T.CreateTruncating(1.0 / (1.0 - p));
        var threshold = (float)p;
        StridedLoop.ForRows(xv.Numel, 1, (i0, i1) =>
        {
            var u = new PhiloxStream(seed);
            for (var i = i0; i < i1; i++)
            {
                var keep = u.Uniform(offset + (ulong)i) >= threshold;
                m[i] = keep ? (byte)1 : (byte)0;
                y[i] = keep ? x[i] * scale : T.Zero;
            }
        });
    }

    /// <inheritdoc/>
    public void Random(StridedView dst, RandomKind kind, double a, double b, ulong seed, ulong offset)
        => Dispatch("Random", dst.DType, () => RandomT<float>(dst, kind, a, b, seed, offset), () => RandomT<double>(dst, kind, a, b, seed, offset));

    private static void RandomT<T>(StridedView dv, RandomKind kind, double a, double b, ulong seed, ulong offset)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var d = P<T>(dv);
        StridedLoop.ForRows(dv.Numel, 1, (i0, i1) =>
        {
            var u = new PhiloxStream(seed);
            for (var i = i0; i < i1; i++)
            {
                var v = kind == RandomKind.Uniform
                    ? a + (b - a) * u.Uniform(offset + (ulong)i)
                    : a + b * Philox.Normal(seed, offset + (ulong)i);
                d[i] = T.CreateTruncating(v);
            }
        });
    }

    // ---- optimizers ----

    /// <inheritdoc/>
    public void SgdStep(StridedView param, StridedView grad, StridedView momentum, in SgdArgs args)
    {
        var a = args;
        Dispatch("SgdStep", param.DType, () => SgdT<float>(param, grad, momentum, a), () => SgdT<double>(param, grad, momentum, a));
    }

    private static void SgdT<T>(StridedView pv, StridedView gv, StridedView mv, SgdArgs a) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* p = P<T>(pv), g = P<T>(gv), m = P<T>(mv);
        T lr = T.CreateTruncating(a.Lr), mu = T.CreateTruncating(a.Momentum), damp = T.CreateTruncating(1 - a.Dampening), wd = T.CreateTruncating(a.WeightDecay);
        var useMomentum = a.Momentum != 0;
        StridedLoop.ForRows(pv.Numel, 1, (i0, i1) =>
        {
            for (var i = i0; i < i1; i++)
            {
                var d = g[i] + wd * p[i];
                if (useMomentum)
                {
                    m[i] = a.FirstStep ? d : mu * m[i] + damp * d;
                    d = a.Nesterov ? d + mu * m[i] : m[i];
                }
                p[i] -= lr * d;
            }
        });
    }

    /// <inheritdoc/>
    public void AdamStep(StridedView param, StridedView grad, StridedView m, StridedView v, in AdamArgs args)
    {
        var a = args;
        Dispatch("AdamStep", param.DType, () => AdamT<float>(param, grad, m, v, a), () => AdamT<double>(param, grad, m, v, a));
    }

    private static void AdamT<T>(StridedView pv, StridedView gv, StridedView mv, StridedView vv, AdamArgs a) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* p = P<T>(pv), g = P<T>(gv), m = P<T>(mv), v = P<T>(vv);
        var k = new AdamConstants<T>(a);
        StridedLoop.ForRows(pv.Numel, 1, (i0, i1) => AdamSpan(p + i0, g + i0, m + i0, v + i0, (int)(i1 - i0), k));
    }

    /// <summary>Adam over <paramref name="n"/> values: whole vectors in place; the tail through one vector's worth of
    /// stack copies, so the update exists once (<see cref="AdamVector{T}"/>).</summary>
    private static void AdamSpan<T>(T* p, T* g, T* m, T* v, int n, in AdamConstants<T> k) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var w = Vector<T>.Count;
        var whole = n / w * w;
        for (var i = 0; i < whole; i += w)
            AdamVector(p + i, g + i, m + i, v + i, k);
        var rest = n - whole;
        if (rest == 0)
            return;
        var t = stackalloc T[4 * w];
        T* tp = t, tg = t + w, tm = t + 2 * w, tv = t + 3 * w;
        for (var j = 0; j < rest; j++)
            (tp[j], tg[j], tm[j], tv[j]) = (p[whole + j], g[whole + j], m[whole + j], v[whole + j]);
        AdamVector(tp, tg, tm, tv, k);
        for (var j = 0; j < rest; j++)
            (p[whole + j], m[whole + j], v[whole + j]) = (tp[j], tm[j], tv[j]);
    }

    /// <inheritdoc/>
    [SkipLocalsInit]   // the block buffers are written before they are read
    public void Adam8BitStep(StridedView param, StridedView grad, StridedView mCodes, StridedView mAbsmax, StridedView rCodes, StridedView rAbsmax, in AdamArgs args)
    {
        if (param.DType != DType.F32)
            throw new NotSupportedException($"cpu Adam8BitStep: 8-bit moments step F32 parameters, not {param.DType.Name()}");
        float* p = (float*)param.Data, g = (float*)grad.Data, ms = (float*)mAbsmax.Data, rs = (float*)rAbsmax.Data;
        sbyte* mc = (sbyte*)mCodes.Data;
        byte* rc = (byte*)rCodes.Data;
        var (n, blocks, k) = (param.Numel, mCodes.Shape[0], new AdamConstants<float>(args));
        const int B = Optim.Adam.StateBlock;
        CpuThreads.For(blocks, b =>
        {
            Span<float> m = stackalloc float[B], r = stackalloc float[B];
            var at = (long)b * B;
            fixed (float* pm = m, pr = r)
                Adam8BitBlock(p + at, g + at, (int)Math.Clamp(n - at, 0, B), mc + at, rc + at, ref ms[b], ref rs[b], k, pm, pr);
        });
    }

    /// <inheritdoc/>
    [SkipLocalsInit]   // the block buffers are written before they are read
    public void QuantAdam8BitStep(in QuantView weight, StridedView grad, StridedView mCodes, StridedView mAbsmax, StridedView rCodes, StridedView rAbsmax, in AdamArgs adam, in QuantizeArgs quantize)
    {
        weight.CheckGroupsDivide(Optim.Adam.StateBlock, "cpu QuantAdam8BitStep");
        float* g = (float*)grad.Data, ms = (float*)mAbsmax.Data, rs = (float*)rAbsmax.Data;
        sbyte* mc = (sbyte*)mCodes.Data;
        byte* rc = (byte*)rCodes.Data;
        var (w, q, n, k) = (weight, quantize, weight.Count, new AdamConstants<float>(adam));
        const int B = Optim.Adam.StateBlock;
        CpuThreads.For(mCodes.Shape[0], b =>
        {
            Span<float> p = stackalloc float[B], m = stackalloc float[B], r = stackalloc float[B];
            var at = (long)b * B;
            var active = (int)Math.Clamp(n - at, 0, B);
            fixed (float* pp = p, pm = m, pr = r)
            {
                QuantKernels.DequantizeRange(w, at, active, pp, 1);
                Adam8BitBlock(pp, g + at, active, mc + at, rc + at, ref ms[b], ref rs[b], k, pm, pr);
                QuantKernels.QuantizeRange(w, pp, at, active, q);
            }
        });
    }

    /// <summary>One block of the 8-bit step in two passes over <paramref name="m"/> and <paramref name="r"/>
    /// (stack buffers of a block): per vector of codes, widened in registers, the moments read (m = code ·
    /// (absmax · 1/127), r = max(code, ½) · (absmax · 1/255), v = (r·r)·(r·r)), Adam on the first
    /// <paramref name="active"/> values, and v^¼ = √√v (√v the one Adam took) with both block maxima; then both
    /// requantized. Every value takes the composed step's operations in its order, so the result is the same to the
    /// bit; the last block's values past the tensor keep their moments.</summary>
    [SkipLocalsInit]   // the tail's stack vectors are written before they are read
    private static void Adam8BitBlock(float* p, float* g, int active, sbyte* mc, byte* rc, ref float mAbsmax, ref float rAbsmax, in AdamConstants<float> k, float* m, float* r)
    {
        const int B = Optim.Adam.StateBlock;
        // The host's factors, rounded to F32 as the composed ops' scalars would be.
        float mStep = (float)(1.0 / 127), rStep = (float)(1.0 / 255), tiny = (float)1e-30;
        Vector<float> mScale = new(mAbsmax * mStep), rScale = new(rAbsmax * rStep), half = new(0.5f);
        Vector<float> mMax = Vector<float>.Zero, rMax = Vector<float>.Zero;
        Vector<int> mNaN = Vector<int>.Zero, rNaN = Vector<int>.Zero;
        var (w, c) = (Vector<float>.Count, k);
        var tail = stackalloc float[2 * w];
        for (var i = 0; i < B; i += 4 * w)
        {
            var (m0, m1, m2, m3) = Floats(Vector.Load(mc + i));
            var (r0, r1, r2, r3) = Floats(Vector.Load(rc + i));
            Lanes(i, m0, r0);
            Lanes(i + w, m1, r1);
            Lanes(i + 2 * w, m2, r2);
            Lanes(i + 3 * w, m3, r3);
        }
        // The largest |m| and v^¼ (NaN when any is NaN, as the composed step's maxima).
        float mm = Vector.EqualsAny(mNaN, Vector<int>.AllBitsSet) ? float.NaN : Max(mMax);
        float rm = Vector.EqualsAny(rNaN, Vector<int>.AllBitsSet) ? float.NaN : Max(rMax);
        Requantize(m, mm, tiny, 127, mc);
        Requantize(r, rm, tiny, 255, (sbyte*)rc);
        (mAbsmax, rAbsmax) = (mm, rm);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        void Lanes(int i, Vector<float> mCodes, Vector<float> rCodes)
        {
            var mi = mCodes * mScale;
            var ri = Vector.MaxNative(rCodes, half) * rScale;
            ri *= ri;
            var vi = ri * ri;
            Vector<float> root;
            if (active - i >= w)
            {
                (var pi, mi, vi, var sqrtV) = AdamLanes(Vector.Load(p + i), Vector.Load(g + i), mi, vi, c);
                Vector.Store(pi, p + i);
                root = Vector.SquareRoot(sqrtV);
            }
            else
            {
                if (active > i)
                {
                    // The last values of the tensor: Adam on copies, kept for the lanes that hold values.
                    var rest = active - i;
                    for (var j = 0; j < w; j++)
                        (tail[j], tail[w + j]) = j < rest ? (p[i + j], g[i + j]) : (0f, 0f);
                    var (pi, mu, vu, _) = AdamLanes(Vector.Load(tail), Vector.Load(tail + w), mi, vi, c);
                    var lanes = Vector.LessThan(Vector<int>.Indices, new Vector<int>(rest));
                    (mi, vi) = (Vector.ConditionalSelect(lanes, mu, mi), Vector.ConditionalSelect(lanes, vu, vi));
                    Vector.Store(pi, tail);
                    for (var j = 0; j < rest; j++)
                        p[i + j] = tail[j];
                }
                root = Vector.SquareRoot(Vector.SquareRoot(vi));
            }
            Vector.Store(mi, m + i);
            Vector.Store(root, r + i);
            (mMax, rMax) = (Vector.MaxNative(mMax, Vector.Abs(mi)), Vector.MaxNative(rMax, root));   // NaN is tracked apart
            mNaN |= ~Vector.Equals(mi, mi);
            rNaN |= ~Vector.Equals(root, root);
        }

        static float Max(Vector<float> x)
        {
            var best = x[0];
            for (var j = 1; j < Vector<float>.Count; j++)
                best = MathF.Max(best, x[j]);
            return best;
        }
    }

    /// <summary>The four vectors of floats of a vector of I8 (or, <paramref name="codes"/> reinterpreted, U8) codes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static (Vector<float>, Vector<float>, Vector<float>, Vector<float>) Floats<TCode>(Vector<TCode> codes) where TCode : unmanaged
    {
        Vector<int> a, b, c, d;
        if (typeof(TCode) == typeof(sbyte))
        {
            Vector.Widen(codes.As<TCode, sbyte>(), out var lo, out var hi);
            Vector.Widen(lo, out a, out b);
            Vector.Widen(hi, out c, out d);
        }
        else
        {
            Vector.Widen(codes.As<TCode, byte>(), out var lo, out var hi);
            Vector.Widen(lo, out var ua, out var ub);
            Vector.Widen(hi, out var uc, out var ud);
            (a, b, c, d) = (ua.As<uint, int>(), ub.As<uint, int>(), uc.As<uint, int>(), ud.As<uint, int>());   // 0 .. 255
        }
        return (Vector.ConvertToSingle(a), Vector.ConvertToSingle(b), Vector.ConvertToSingle(c), Vector.ConvertToSingle(d));
    }

    /// <summary>The <see cref="Optim.Adam.StateBlock"/> codes of a block, round-half-even(x · (levels / max(absmax,
    /// tiny))) saturated to [-128, 127] (levels 127, I8 codes) or [0, 255] (levels 255, U8 codes, written through
    /// <paramref name="codes"/> as the same bytes), NaN to 0: the composed step's multiply and rounding cast per
    /// value, in one pass.</summary>
    private static void Requantize(float* x, float absmax, float tiny, float levels, sbyte* codes)
    {
        var safe = float.IsNaN(absmax) || absmax >= tiny ? absmax : tiny;
        var signed = levels < 255;
        Vector<float> factor = new(levels / safe), lo = new(signed ? -128f : 0f), hi = new(signed ? 127f : 255f);
        var w = Vector<float>.Count;
        for (var i = 0; i < Optim.Adam.StateBlock; i += 4 * w)
        {
            var low = Vector.Narrow(Code(x + i), Code(x + i + w));
            var high = Vector.Narrow(Code(x + i + 2 * w), Code(x + i + 3 * w));
            Vector.Store(Vector.Narrow(low, high), codes + i);   // -128 .. 255 in 16 bits, then their low bytes
        }

        Vector<int> Code(float* at)
        {
            var t = Vector.Load(at) * factor;
            var rounded = Vector.ConditionalSelect(Vector.Equals(t, t), Vector.Round(t), Vector<float>.Zero);
            return Vector.ConvertToInt32Native(Vector.MinNative(Vector.MaxNative(rounded, lo), hi));   // no NaN left: the native forms
        }
    }

    /// <summary>Adam's (or AdamW's) constants of one step in the element type, as vectors.</summary>
    private readonly struct AdamConstants<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public readonly Vector<T> Beta1, Beta2, OneMinusBeta1, OneMinusBeta2, Eps, WeightDecay, Decay, Lr, C1, C2;
        public readonly bool Decoupled;

        public AdamConstants(AdamArgs a)
        {
            (Beta1, Beta2, Eps, WeightDecay) = (V(a.Beta1), V(a.Beta2), V(a.Eps), V(a.WeightDecay));
            // 1 - β in double: 1 - (float)0.999 is off by 1.3e-5 relative.
            (OneMinusBeta1, OneMinusBeta2) = (V(1 - a.Beta1), V(1 - a.Beta2));
            (C1, C2) = (V(1 / (1 - Math.Pow(a.Beta1, a.Step))), V(1 / Math.Sqrt(1 - Math.Pow(a.Beta2, a.Step))));
            (Lr, Decay, Decoupled) = (V(a.Lr), V(1 - a.Lr * a.WeightDecay), a.Decoupled);
        }

        private static Vector<T> V(double x) => new(T.CreateTruncating(x));
    }

    /// <summary>One vector of Adam: m = β1·m + (1 − β1)·g, v = β2·v + (1 − β2)·g², then PyTorch's form
    /// p −= lr·m̂ / (√v̂ + eps), with L2 weight decay added to g or (AdamW) p scaled by 1 − lr·λ first. Each lane
    /// computes exactly what the scalar formula would.</summary>
    private static void AdamVector<T>(T* p, T* g, T* m, T* v, in AdamConstants<T> k) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (pi, mi, vi, _) = AdamLanes(Vector.Load(p), Vector.Load(g), Vector.Load(m), Vector.Load(v), k);
        Vector.Store(pi, p);
        Vector.Store(mi, m);
        Vector.Store(vi, v);
    }

    /// <summary>The lanes of <see cref="AdamVector{T}"/>: the new parameter and moments from the old and the gradient,
    /// and the square root of the new second moment that the step took.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector<T> P, Vector<T> M, Vector<T> V, Vector<T> SqrtV) AdamLanes<T>(Vector<T> pi, Vector<T> gi, Vector<T> m, Vector<T> v, in AdamConstants<T> k) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (k.Decoupled)
            pi *= k.Decay;
        else
            gi += k.WeightDecay * pi;
        var mi = k.Beta1 * m + k.OneMinusBeta1 * gi;
        var vi = k.Beta2 * v + k.OneMinusBeta2 * gi * gi;
        var sqrtV = Vector.SquareRoot(vi);
        pi -= k.Lr * (mi * k.C1) / (sqrtV * k.C2 + k.Eps);
        return (pi, mi, vi, sqrtV);
    }

    // ---- CSR and BSR weights ----

    /// <inheritdoc/>
    public void CsrMultiplyTransposed(in CsrView w, StridedView xT, StridedView yT)
        => CsrKernels.MultiplyTransposed(w, yT.Shape[1], (float*)xT.Data, (float*)yT.Data);

    /// <inheritdoc/>
    public void CsrMultiply(in CsrView w, StridedView dyT, StridedView dxT)
        => CsrKernels.Multiply(w, dxT.Shape[1], (float*)dyT.Data, (float*)dxT.Data);

    /// <inheritdoc/>
    public void CsrSampledGradient(in CsrView w, StridedView dyT, StridedView xT, StridedView dValues)
        => CsrKernels.SampledGradient(w, xT.Shape[1], (float*)dyT.Data, (float*)xT.Data, (float*)dValues.Data);

    /// <inheritdoc/>
    public void Quantize(in QuantView w, StridedView dense, in QuantizeArgs args) => QuantKernels.Quantize(w, (float*)dense.Data, args);

    /// <inheritdoc/>
    public void Dequantize(in QuantView w, StridedView dense) => QuantKernels.Dequantize(w, (float*)dense.Data);

    /// <inheritdoc/>
    public void QuantMatMul(in QuantView w, bool transposed, StridedView x, StridedView y)
        => QuantKernels.MatMul(w, transposed, x.Shape[0], (float*)x.Data, (float*)y.Data);
}
