using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Frugal.Backends.Cpu;

/// <summary>Micro-kernel family used by <see cref="Gemm"/>. <see cref="Auto"/> picks the best one the CPU supports;
/// the others exist so tests can exercise every code path on any machine (they are always correct, merely slow
/// where the hardware lacks the instructions).</summary>
internal enum GemmKernel
{
    /// <summary>Best available: Vector512 with AVX-512F, else Vector256 with FMA, else scalar.</summary>
    Auto = 0,

    /// <summary>12 x (2 x Vector512) register tile.</summary>
    Vector512 = 1,

    /// <summary>6 x (2 x Vector256) register tile.</summary>
    Vector256 = 2,

    /// <summary>4 x 4 scalar tile.</summary>
    Scalar = 3,
}

/// <summary>
/// Dense row-major general matrix multiply, C = alpha * op(A) * op(B) + beta * C, for float and double.
/// </summary>
/// <remarks>
/// <para>Layout (all row-major): op(A) is m x k; A is stored m x k (or k x m when <c>transA</c>) with leading
/// dimension <c>lda</c>. op(B) is k x n; B is stored k x n (or n x k when <c>transB</c>) with leading dimension
/// <c>ldb</c>. C is m x n with leading dimension <c>ldc</c>. When beta is zero C is only written, never read
/// (NaN in C is overwritten).</para>
/// <para>Algorithm (Goto/BLIS style): the n dimension is cut into NC blocks, k into KC blocks and m into MC
/// blocks. Each KC x NC block of op(B) is packed into NR-wide column panels and each MC x KC block of
/// alpha * op(A) into MR-tall row panels, k innermost, zero padded at the edges. A register-blocked micro-kernel
/// then computes MR x NR tiles of C with fused multiply-adds; partial edge tiles go through a small scratch
/// tile. Pack buffers are 64-byte aligned native memory kept in a small pool, so steady-state calls allocate
/// no managed memory apart from the parallel-loop bookkeeping.</para>
/// <para>Threading: large problems are split into disjoint row (or column) ranges of C, aligned to the
/// micro-tile, one per worker. Every element of C is produced by exactly one thread, with a k order that
/// depends only on k, so results are bitwise identical whatever the thread count.</para>
/// </remarks>
internal static unsafe class Gemm
{
    /// <summary>Problems with fewer multiply-adds than this run on the calling thread.</summary>
    private const long ParallelThresholdMacs = 1L << 21;

    // Products with a small C and a long k (a convolution's weight gradient: C is OutC x C·KH·KW, k runs over
    // every output pixel of the batch) are cut along k into chunks of KChunk, multiplied in parallel into private
    // partial products and summed in chunk order. The cut depends on the shape only, so the result does not
    // depend on the number of threads.
    private const int KChunk = 4096;
    private const long SmallOutputElements = 1L << 15;

    private const int ModeOverwrite = 0;
    private const int ModeAdd = 1;
    private const int ModeScale = 2;

    /// <summary>Writes op(B)[p0 .. p0 + kc, c0 .. c0 + nc] as <see cref="PackB"/> packs it: NR-column panels, panel q
    /// holding columns q·NR .. q·NR + NR − 1 as kc consecutive groups of NR values, zero padded.</summary>
    internal delegate void PanelSource(int p0, int c0, int kc, int nc, int nr, float* dst);

    /// <summary>Kernel family chosen by <see cref="GemmKernel.Auto"/> on this machine.</summary>
    internal static GemmKernel BestKernel { get; } =
        Avx512F.IsSupported ? GemmKernel.Vector512
        : (Fma.IsSupported && Vector256.IsHardwareAccelerated) ? GemmKernel.Vector256
        : GemmKernel.Scalar;

    // ------------------------------------------------------------------------------------------------
    // Public entry points
    // ------------------------------------------------------------------------------------------------

    /// <summary>Single-precision GEMM: C[m x n] = alpha * op(A) * op(B) + beta * C (row-major).</summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, float* a, int lda,
        float* b, int ldb, float beta, float* c, int ldc)
        => Run(GemmKernel.Auto, CpuThreads.Count, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);

    /// <summary>Batched single-precision GEMM. Matrix i uses A + i * strideA, B + i * strideB and
    /// C + i * strideC; a stride of 0 for A or B broadcasts one matrix over the batch.</summary>
    public static void SgemmBatched(bool transA, bool transB, int batch, int m, int n, int k, float alpha,
        float* a, int lda, long strideA, float* b, int ldb, long strideB, float beta, float* c, int ldc, long strideC)
        => RunBatched(GemmKernel.Auto, CpuThreads.Count, transA, transB, batch, m, n, k, alpha,
            a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC);

    /// <summary>Double-precision GEMM: C[m x n] = alpha * op(A) * op(B) + beta * C (row-major).</summary>
    public static void Dgemm(bool transA, bool transB, int m, int n, int k, double alpha, double* a, int lda,
        double* b, int ldb, double beta, double* c, int ldc)
        => Run(GemmKernel.Auto, CpuThreads.Count, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);

    /// <summary>Batched double-precision GEMM; see <see cref="SgemmBatched"/>.</summary>
    public static void DgemmBatched(bool transA, bool transB, int batch, int m, int n, int k, double alpha,
        double* a, int lda, long strideA, double* b, int ldb, long strideB, double beta, double* c, int ldc, long strideC)
        => RunBatched(GemmKernel.Auto, CpuThreads.Count, transA, transB, batch, m, n, k, alpha,
            a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC);

    // ------------------------------------------------------------------------------------------------
    // Driver
    // ------------------------------------------------------------------------------------------------

    /// <summary>Blocking parameters for one (kernel, element type) pair.</summary>
    private readonly struct Config
    {
        public readonly GemmKernel Kernel;
        public readonly int MR, NR, KC, MC, NC;

        public Config(GemmKernel kernel, int mr, int nr, int kc, int mc, int nc)
        {
            Kernel = kernel;
            MR = mr;
            NR = nr;
            KC = kc;
            MC = mc;
            NC = nc;
        }
    }

    private static Config GetConfig<T>(GemmKernel kernel)
        where T : unmanaged
    {
        if (kernel == GemmKernel.Auto)
            kernel = BestKernel;
        // Measured on Zen 4 (1 MiB L2 per core, 32 MiB shared L3): a deep KC (512) wins over an L1-sized one because
        // it cuts the per-call overhead of the micro-kernel and the number of read-modify-write passes over C; the
        // KC x NR micro-panel of B (64 KiB) and the MC x KC block of A (384 KiB) both stay in L2, and the
        // KC x NC block of B (8 MiB for float) in L3. MC and NC are multiples of MR and NR.
        var size = sizeof(T);
        const int kc = 512;
        var mc = 384 * 1024 / (kc * size);
        var nc = 8 * 1024 * 1024 / (kc * size);
        return kernel switch
        {
            GemmKernel.Vector512 => new Config(kernel, 12, 2 * Vector512<T>.Count, kc, mc / 12 * 12, nc),
            GemmKernel.Vector256 => new Config(kernel, 6, 2 * Vector256<T>.Count, kc, mc / 6 * 6, nc),
            _ => new Config(GemmKernel.Scalar, 4, 4, 256, 128, 2048),
        };
    }

    /// <summary>Validating entry point shared by all element types and kernel families.</summary>
    internal static void Run<T>(GemmKernel kernel, int maxThreads, bool transA, bool transB, int m, int n, int k,
        T alpha, T* a, long lda, T* b, long ldb, T beta, T* c, long ldc)
        where T : unmanaged, INumberBase<T>
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (m == 0 || n == 0)
            return;
        ArgumentOutOfRangeException.ThrowIfLessThan(ldc, (long)n);
        if (k == 0 || alpha == T.Zero)
        {
            ScaleC(m, n, beta, c, ldc);
            return;
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(lda, (long)(transA ? m : k));
        ArgumentOutOfRangeException.ThrowIfLessThan(ldb, (long)(transB ? k : n));
        if (a == null || b == null || c == null)
            throw new ArgumentNullException(a == null ? nameof(a) : b == null ? nameof(b) : nameof(c));

        var cfg = GetConfig<T>(kernel);
        if ((long)m * n <= SmallOutputElements && k >= 2 * KChunk)
        {
            SplitK(cfg, maxThreads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        Dispatch(new Args<T>(cfg, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), maxThreads);
    }

    /// <summary>Single-precision C[m x n] = op(A)·B + beta·C where the packed panels of B [k x n] are written by
    /// <paramref name="b"/> (a weight stored in another format, unpacked straight into the GEMM's packing buffer: no
    /// copy of B exists beyond one KC × NC block).</summary>
    public static void SgemmSourcedB(bool transA, int m, int n, int k, float* a, int lda, PanelSource b, float beta, float* c, int ldc)
    {
        ArgumentNullException.ThrowIfNull(b);
        if (m == 0 || n == 0)
            return;
        if (k == 0)
        {
            ScaleC(m, n, beta, c, ldc);
            return;
        }
        var cfg = GetConfig<float>(GemmKernel.Auto);
        Dispatch(new Args<float>(cfg, transA, false, m, n, k, 1, a, lda, null, n, beta, c, ldc, b), CpuThreads.Count);
    }

    /// <summary>Runs validated arguments on up to <paramref name="maxThreads"/> threads, split along the larger side.</summary>
    private static void Dispatch<T>(in Args<T> args, int maxThreads)
        where T : unmanaged, INumberBase<T>
    {
        var (cfg, m, n, k) = (args.Cfg, args.M, args.N, args.K);
        var macs = (long)m * n * k;
        var parts = 1;
        var splitM = m >= n;
        if (maxThreads > 1 && macs >= ParallelThresholdMacs)
        {
            var units = splitM ? (m + cfg.MR - 1) / cfg.MR : (n + cfg.NR - 1) / cfg.NR;
            if (units < 2 * maxThreads)
            {
                // Too few tiles along the larger side to balance: try the other side.
                var other = splitM ? (n + cfg.NR - 1) / cfg.NR : (m + cfg.MR - 1) / cfg.MR;
                if (other > units)
                {
                    splitM = !splitM;
                    units = other;
                }
            }
            parts = (int)Math.Min(Math.Min(maxThreads, units), Math.Max(1, macs / ParallelThresholdMacs));
        }
        Drive(in args, parts, splitM);
    }

    /// <summary>C = beta·C + Σ_j alpha·op(A)[:, chunk j]·op(B)[chunk j, :], chunks of <see cref="KChunk"/> along k
    /// multiplied in parallel (one thread each) and summed in order.</summary>
    private static void SplitK<T>(Config cfg, int maxThreads, bool transA, bool transB, int m, int n, int k,
        T alpha, T* a, long lda, T* b, long ldb, T beta, T* c, long ldc)
        where T : unmanaged, INumberBase<T>
    {
        var chunks = (k + KChunk - 1) / KChunk;
        var size = (long)m * n;
        var buffer = PackBuffer.Rent((nuint)(chunks * size * sizeof(T) + 64));
        try
        {
            var partial = (nint)AlignUp(buffer.Pointer);
            var (pa, pb) = ((nint)a, (nint)b);
            CpuThreads.For(chunks, j =>
            {
                var k0 = (long)j * KChunk;
                var kk = (int)Math.Min(KChunk, k - k0);
                var aj = (T*)pa + (transA ? k0 * lda : k0);
                var bj = (T*)pb + (transB ? k0 : k0 * ldb);
                var part = new Args<T>(cfg, transA, transB, m, n, kk, alpha, aj, lda, bj, ldb, T.Zero, (T*)partial + j * size, n);
                Drive(in part, 1, true);
            }, parallel: maxThreads > 1);
            var sums = new Span<T>((T*)partial, (int)size);
            for (var j = 1; j < chunks; j++)
                TensorPrimitives.Add(sums, new ReadOnlySpan<T>((T*)partial + j * size, (int)size), sums);
            MergeTile((T*)partial, n, c, ldc, m, n, beta, ModeFor(beta));
        }
        finally
        {
            PackBuffer.Return(buffer);
        }
    }

    /// <summary>Validating batched entry point.</summary>
    internal static void RunBatched<T>(GemmKernel kernel, int maxThreads, bool transA, bool transB, int batch,
        int m, int n, int k, T alpha, T* a, long lda, long strideA, T* b, long ldb, long strideB, T beta, T* c,
        long ldc, long strideC)
        where T : unmanaged, INumberBase<T>
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (batch == 0 || m == 0 || n == 0)
            return;

        var macs = (long)m * n * k;
        // Small matrices: one thread per group of whole matrices. Large ones: thread inside each product.
        // An output stride of 0 makes every product write the same C: keep the order sequential then.
        var overBatch = maxThreads > 1 && batch > 1 && strideC != 0 && macs * batch >= ParallelThresholdMacs
            && (batch >= 2 * maxThreads || macs < 8 * ParallelThresholdMacs);
        if (!overBatch)
        {
            for (var i = 0; i < batch; i++)
                Run(kernel, maxThreads, transA, transB, m, n, k, alpha, a + i * strideA, lda, b + i * strideB, ldb,
                    beta, c + i * strideC, ldc);
            return;
        }

        var parts = (int)Math.Min(Math.Min(maxThreads, batch), Math.Max(1, macs * batch / ParallelThresholdMacs));
        var pa = (nint)a;
        var pb = (nint)b;
        var pc = (nint)c;
        CpuThreads.For(parts, p =>
        {
            var i0 = (int)((long)batch * p / parts);
            var i1 = (int)((long)batch * (p + 1) / parts);
            for (var i = i0; i < i1; i++)
                Run(kernel, 1, transA, transB, m, n, k, alpha, (T*)pa + i * strideA, lda, (T*)pb + i * strideB, ldb,
                    beta, (T*)pc + i * strideC, ldc);
        });
    }

    /// <summary>All arguments of one product, passed to workers.</summary>
    private readonly struct Args<T>
        where T : unmanaged
    {
        public readonly Config Cfg;
        public readonly bool TransA, TransB;
        public readonly int M, N, K;
        public readonly T Alpha, Beta;
        public readonly nint A, B, C;
        public readonly long Lda, Ldb, Ldc;

        /// <summary>When set, writes the packed panels of op(B) instead of <see cref="PackB"/> (B is then unused).</summary>
        public readonly PanelSource? Source;

        public Args(Config cfg, bool transA, bool transB, int m, int n, int k, T alpha, T* a, long lda, T* b, long ldb,
            T beta, T* c, long ldc, PanelSource? source = null)
        {
            Source = source;
            Cfg = cfg;
            TransA = transA;
            TransB = transB;
            M = m;
            N = n;
            K = k;
            Alpha = alpha;
            Beta = beta;
            A = (nint)a;
            B = (nint)b;
            C = (nint)c;
            Lda = lda;
            Ldb = ldb;
            Ldc = ldc;
        }
    }

    /// <summary>Runs <paramref name="body"/> for parts 0 .. parts - 1: inline for one part, else on the thread pool.</summary>
    private static void ForParts(int parts, Action<int> body)
    {
        if (parts == 1)
            body(0);
        else
            CpuThreads.For(parts, body);
    }

    /// <summary>The blocked product on <paramref name="parts"/> threads. For each KC x NC block of op(B), the threads
    /// first pack disjoint panels of it into one shared buffer, then each multiplies its share of C (rows when
    /// <paramref name="splitM"/>, else column panels) against it, packing its own blocks of op(A).</summary>
    private static void Drive<T>(in Args<T> args, int parts, bool splitM)
        where T : unmanaged, INumberBase<T>
    {
        var g = args;
        var cfg = g.Cfg;
        int mr = cfg.MR, nr = cfg.NR, m = g.M, n = g.N, k = g.K;

        // Even block sizes: KC depends on k only, so the summation order does not depend on the partition.
        var kBlocks = (k + cfg.KC - 1) / cfg.KC;
        var kcStep = (k + kBlocks - 1) / kBlocks;
        var nBlocks = (n + cfg.NC - 1) / cfg.NC;
        var ncStep = RoundUp((n + nBlocks - 1) / nBlocks, nr);
        var mUnits = (m + mr - 1) / mr;
        var firstMode = ModeFor(g.Beta);

        var bufferB = PackBuffer.Rent((nuint)((long)ncStep * kcStep * sizeof(T) + 64));
        try
        {
            var packedB = (T*)AlignUp(bufferB.Pointer);
            for (var jc = 0; jc < n; jc += ncStep)
            {
                var nc = Math.Min(ncStep, n - jc);
                var panels = (nc + nr - 1) / nr;
                for (var pc = 0; pc < k; pc += kcStep)
                {
                    var kc = Math.Min(kcStep, k - pc);
                    var (col0, p0, mode) = (jc, pc, pc == 0 ? firstMode : ModeAdd);
                    ForParts(parts, p =>
                    {
                        int q0 = panels * p / parts, q1 = panels * (p + 1) / parts;
                        if (q1 <= q0)
                            return;
                        var c0 = col0 + q0 * nr;
                        var width = Math.Min(nc - q0 * nr, (q1 - q0) * nr);
                        var dst = packedB + (long)q0 * nr * kc;
                        if (g.Source is { } source)
                            source(p0, c0, kc, width, nr, (float*)dst);
                        else
                            PackB(g.TransB, (T*)g.B, g.Ldb, p0, c0, kc, width, nr, dst);
                    });
                    ForParts(parts, p =>
                    {
                        if (splitM)
                        {
                            int r0 = Math.Min(m, mUnits * p / parts * mr), r1 = Math.Min(m, mUnits * (p + 1) / parts * mr);
                            MultiplyBlock(in g, packedB, r0, r1 - r0, 0, nc, col0, p0, kc, mode);
                        }
                        else
                        {
                            int q0 = panels * p / parts, q1 = panels * (p + 1) / parts;
                            MultiplyBlock(in g, packedB, 0, m, q0 * nr, Math.Min(nc, q1 * nr) - q0 * nr, col0, p0, kc, mode);
                        }
                    });
                }
            }
        }
        finally
        {
            PackBuffer.Return(bufferB);
        }
    }

    /// <summary>C[row0 .. row0 + rows, col0 + j0 .. col0 + j0 + cols] (+)= op(A)[rows, p0 .. p0 + kc] · packed B
    /// columns j0 .. j0 + cols, on the calling thread, packing op(A) in MC-row blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MultiplyBlock<T>(in Args<T> g, T* packedB, int row0, int rows, int j0, int cols, int col0, int p0, int kc, int mode)
        where T : unmanaged, INumberBase<T>
    {
        if (rows <= 0 || cols <= 0)
            return;
        var cfg = g.Cfg;
        int mr = cfg.MR, nr = cfg.NR;
        var mBlocks = (rows + cfg.MC - 1) / cfg.MC;
        var mcStep = RoundUp((rows + mBlocks - 1) / mBlocks, mr);
        var aElems = (long)mcStep * kc;
        var buffer = PackBuffer.Rent((nuint)((aElems + (long)mr * nr) * sizeof(T) + 2 * 64));
        try
        {
            var bufA = (T*)AlignUp(buffer.Pointer);
            var tile = (T*)AlignUp((byte*)(bufA + aElems));
            var beta = g.Beta;
            for (var ic = 0; ic < rows; ic += mcStep)
            {
                var mc = Math.Min(mcStep, rows - ic);
                PackA(g.TransA, (T*)g.A, g.Lda, row0 + ic, p0, mc, kc, mr, g.Alpha, bufA);
                for (var jr = j0; jr < j0 + cols; jr += nr)
                {
                    var nrr = Math.Min(nr, j0 + cols - jr);
                    var pb = packedB + (long)jr * kc;
                    var cCol = (T*)g.C + col0 + jr;
                    for (var ir = 0; ir < mc; ir += mr)
                    {
                        var mrr = Math.Min(mr, mc - ir);
                        var pa = bufA + (long)ir * kc;
                        var cc = cCol + (row0 + ic + ir) * g.Ldc;
                        if (mrr == mr && nrr == nr)
                        {
                            MicroKernel(cfg.Kernel, kc, pa, pb, cc, (nint)g.Ldc, beta, mode);
                        }
                        else
                        {
                            MicroKernel(cfg.Kernel, kc, pa, pb, tile, nr, T.Zero, ModeOverwrite);
                            MergeTile(tile, nr, cc, g.Ldc, mrr, nrr, beta, mode);
                        }
                    }
                }
            }
        }
        finally
        {
            PackBuffer.Return(buffer);
        }
    }

    /// <summary>How the first k-block treats C: overwrite (beta 0), add (beta 1) or scale and add.</summary>
    private static int ModeFor<T>(T beta) where T : INumberBase<T>
        => beta == T.Zero ? ModeOverwrite : beta == T.One ? ModeAdd : ModeScale;

    private static int RoundUp(int x, int to) => (x + to - 1) / to * to;

    private static byte* AlignUp(byte* p) => (byte*)(((nuint)p + 63) & ~(nuint)63);

    /// <summary>C = beta * C (beta == 0 clears, ignoring NaN).</summary>
    private static void ScaleC<T>(int m, int n, T beta, T* c, long ldc)
        where T : unmanaged, INumberBase<T>
    {
        if (beta == T.One)
            return;
        for (var i = 0; i < m; i++)
        {
            var row = new Span<T>(c + i * ldc, n);
            if (beta == T.Zero)
            {
                row.Clear();
            }
            else
            {
                for (var j = 0; j < row.Length; j++)
                    row[j] *= beta;
            }
        }
    }

    /// <summary>Writes an mr x nr corner of a scratch tile into C according to the mode.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MergeTile<T>(T* tile, int ldt, T* c, long ldc, int mr, int nr, T beta, int mode)
        where T : unmanaged, INumberBase<T>
    {
        for (var i = 0; i < mr; i++)
        {
            var src = tile + i * ldt;
            var dst = c + i * ldc;
            switch (mode)
            {
                case ModeOverwrite:
                    for (var j = 0; j < nr; j++)
                        dst[j] = src[j];
                    break;
                case ModeAdd:
                    for (var j = 0; j < nr; j++)
                        dst[j] += src[j];
                    break;
                default:
                    for (var j = 0; j < nr; j++)
                        dst[j] = beta * dst[j] + src[j];
                    break;
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Packing
    // ------------------------------------------------------------------------------------------------

    /// <summary>Packs alpha * op(A)[r0 .. r0 + mc, p0 .. p0 + kc] into MR-row panels: panel q holds rows
    /// q*MR .. q*MR + MR - 1 as kc consecutive groups of MR values (zero padded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA<T>(bool transA, T* a, long lda, int r0, int p0, int mc, int kc, int mr, T alpha, T* dst)
        where T : unmanaged, INumberBase<T>
    {
        var scale = alpha != T.One;
        for (var ip = 0; ip < mc; ip += mr)
        {
            var rows = Math.Min(mr, mc - ip);
            var panel = dst + (long)ip * kc;
            if (!transA)
            {
                // A[i, p] = a[i * lda + p]: whole 8 × 8 tiles transposed in registers, the rest read row by row and
                // scattered with stride MR.
                var tiled = Transpose8Tiles(a + (r0 + ip) * lda + p0, lda, panel, mr, rows, kc, alpha);
                for (var i = 0; i < rows; i++)
                {
                    var src = a + (r0 + ip + i) * lda + p0;
                    var d = panel + i;
                    var from = i < tiled.Rows ? tiled.Depth : 0;
                    if (scale)
                    {
                        for (var p = from; p < kc; p++)
                            d[p * mr] = alpha * src[p];
                    }
                    else
                    {
                        for (var p = from; p < kc; p++)
                            d[p * mr] = src[p];
                    }
                }
                for (var i = rows; i < mr; i++)
                {
                    var d = panel + i;
                    for (var p = 0; p < kc; p++)
                        d[p * mr] = T.Zero;
                }
            }
            else
            {
                // A[i, p] = a[p * lda + i]: MR consecutive values per k step, in 256- and 128-bit vectors where
                // they fill them (times alpha, exact when alpha is 1).
                Vector256<T> alpha256 = Vector256.Create(alpha);
                Vector128<T> alpha128 = Vector128.Create(alpha);
                for (var p = 0; p < kc; p++)
                {
                    var src = a + (p0 + p) * lda + r0 + ip;
                    var d = panel + p * mr;
                    var i = 0;
                    for (; Vector256.IsHardwareAccelerated && i + Vector256<T>.Count <= rows; i += Vector256<T>.Count)
                        Vector256.Store(Vector256.Load(src + i) * alpha256, d + i);
                    for (; Vector128.IsHardwareAccelerated && i + Vector128<T>.Count <= rows; i += Vector128<T>.Count)
                        Vector128.Store(Vector128.Load(src + i) * alpha128, d + i);
                    for (; i < rows; i++)
                        d[i] = scale ? alpha * src[i] : src[i];
                    for (i = rows; i < mr; i++)
                        d[i] = T.Zero;
                }
            }
        }
    }

    /// <summary>Packs op(B)[p0 .. p0 + kc, c0 .. c0 + nc] into NR-column panels: panel q holds columns
    /// q*NR .. q*NR + NR - 1 as kc consecutive groups of NR values (zero padded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB<T>(bool transB, T* b, long ldb, int p0, int c0, int kc, int nc, int nr, T* dst)
        where T : unmanaged, INumberBase<T>
    {
        for (var jp = 0; jp < nc; jp += nr)
        {
            var cols = Math.Min(nr, nc - jp);
            var panel = dst + (long)jp * kc;
            if (!transB)
            {
                // B[p, j] = b[p * ldb + j]: NR consecutive values per k step.
                for (var p = 0; p < kc; p++)
                {
                    var src = b + (p0 + p) * ldb + c0 + jp;
                    var d = panel + p * nr;
                    if (cols == nr && nr % Vector256<T>.Count == 0)
                    {
                        // A few vectors per k step: no library call each.
                        for (var j = 0; j < nr; j += Vector256<T>.Count)
                            Vector256.Store(Vector256.Load(src + j), d + j);
                    }
                    else
                    {
                        for (var j = 0; j < cols; j++)
                            d[j] = src[j];
                        for (var j = cols; j < nr; j++)
                            d[j] = T.Zero;
                    }
                }
            }
            else
            {
                // B[p, j] = b[j * ldb + p]: whole 8 × 8 tiles transposed in registers, the rest read row by row and
                // scattered with stride NR.
                var tiled = Transpose8Tiles(b + (c0 + jp) * ldb + p0, ldb, panel, nr, cols, kc, T.One);
                for (var j = 0; j < cols; j++)
                {
                    var src = b + (c0 + jp + j) * ldb + p0;
                    var d = panel + j;
                    for (var p = j < tiled.Rows ? tiled.Depth : 0; p < kc; p++)
                        d[p * nr] = src[p];
                }
                for (var j = cols; j < nr; j++)
                {
                    var d = panel + j;
                    for (var p = 0; p < kc; p++)
                        d[p * nr] = T.Zero;
                }
            }
        }
    }

    /// <summary>Packs the leading whole 8 × 8 tiles of a row-major block (<paramref name="rows"/> rows of
    /// <paramref name="depth"/> values, row stride <paramref name="stride"/>) transposed into <paramref name="dst"/>
    /// (row p of the result at dst + p·<paramref name="dstStride"/>), times <paramref name="alpha"/>: F32 with AVX,
    /// eight rows at a time, then four more where at least four are left (the 12-row panels of the 512-bit kernel,
    /// the 6-row ones of the 256-bit kernel). Returns how many rows and how many values of each it packed (0 and 0
    /// otherwise).</summary>
    private static (int Rows, int Depth) Transpose8Tiles<T>(T* src, long stride, T* dst, int dstStride, int rows, int depth, T alpha)
        where T : unmanaged, INumberBase<T>
    {
        if (typeof(T) != typeof(float) || !Avx.IsSupported || rows < 4 || depth < 8)
            return (0, 0);
        int tiledRows = rows / 8 * 8, tiledDepth = depth / 8 * 8;
        var scale = Vector256.Create((float)(object)alpha);
        for (var i = 0; i < tiledRows; i += 8)
        {
            for (var p = 0; p < tiledDepth; p += 8)
                Transpose8x8((float*)src + i * stride + p, stride, (float*)dst + (long)p * dstStride + i, dstStride, scale);
        }
        if (rows - tiledRows >= 4)
        {
            for (var p = 0; p < tiledDepth; p += 8)
                Transpose4x8((float*)src + tiledRows * stride + p, stride, (float*)dst + (long)p * dstStride + tiledRows, dstStride, scale);
            tiledRows += 4;
        }
        return (tiledRows, tiledDepth);
    }

    /// <summary>dst row j (four values) = alpha · (column j of the 4 × 8 tile at src), as <see cref="Transpose8x8"/>
    /// with the lanes' halves stored apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose4x8(float* s, long ss, float* d, long ds, Vector256<float> alpha)
    {
        Vector256<float> r0 = Avx.LoadVector256(s), r1 = Avx.LoadVector256(s + ss), r2 = Avx.LoadVector256(s + 2 * ss), r3 = Avx.LoadVector256(s + 3 * ss);
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1), t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        // Columns j and j + 4 in the two 128-bit halves.
        Vector256<float> u0 = alpha * Avx.Shuffle(t0, t2, 0x44), u1 = alpha * Avx.Shuffle(t0, t2, 0xEE), u2 = alpha * Avx.Shuffle(t1, t3, 0x44), u3 = alpha * Avx.Shuffle(t1, t3, 0xEE);
        Sse.Store(d, u0.GetLower());
        Sse.Store(d + ds, u1.GetLower());
        Sse.Store(d + 2 * ds, u2.GetLower());
        Sse.Store(d + 3 * ds, u3.GetLower());
        Sse.Store(d + 4 * ds, u0.GetUpper());
        Sse.Store(d + 5 * ds, u1.GetUpper());
        Sse.Store(d + 6 * ds, u2.GetUpper());
        Sse.Store(d + 7 * ds, u3.GetUpper());
    }

    /// <summary>dst row j = alpha · (column j of the 8 × 8 tile at src): unpack, shuffle and lane permutes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float* s, long ss, float* d, long ds, Vector256<float> alpha)
    {
        Vector256<float> r0 = Avx.LoadVector256(s), r1 = Avx.LoadVector256(s + ss), r2 = Avx.LoadVector256(s + 2 * ss), r3 = Avx.LoadVector256(s + 3 * ss);
        Vector256<float> r4 = Avx.LoadVector256(s + 4 * ss), r5 = Avx.LoadVector256(s + 5 * ss), r6 = Avx.LoadVector256(s + 6 * ss), r7 = Avx.LoadVector256(s + 7 * ss);
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1), t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5), t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);
        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE), u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44), u5 = Avx.Shuffle(t4, t6, 0xEE), u6 = Avx.Shuffle(t5, t7, 0x44), u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(d, alpha * Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(d + ds, alpha * Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(d + 2 * ds, alpha * Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(d + 3 * ds, alpha * Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(d + 4 * ds, alpha * Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(d + 5 * ds, alpha * Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(d + 6 * ds, alpha * Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(d + 7 * ds, alpha * Avx.Permute2x128(u3, u7, 0x31));
    }

    // ------------------------------------------------------------------------------------------------
    // Micro-kernels
    // ------------------------------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MicroKernel<T>(GemmKernel kernel, int kc, T* pa, T* pb, T* c, nint ldc, T beta, int mode)
        where T : unmanaged, INumberBase<T>
    {
        switch (kernel)
        {
            case GemmKernel.Vector512:
                Kernel512(kc, pa, pb, c, ldc, beta, mode);
                break;
            case GemmKernel.Vector256:
                Kernel256(kc, pa, pb, c, ldc, beta, mode);
                break;
            default:
                KernelScalar(kc, pa, pb, c, ldc, beta, mode);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> Fma512<T>(Vector512<T> a, Vector512<T> b, Vector512<T> acc)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            return Vector512.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), acc.AsSingle()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector512.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), acc.AsDouble()).As<double, T>();
        return a * b + acc;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<T> Fma256<T>(Vector256<T> a, Vector256<T> b, Vector256<T> acc)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            return Vector256.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), acc.AsSingle()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector256.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), acc.AsDouble()).As<double, T>();
        return a * b + acc;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512<T>(T* c, Vector512<T> v0, Vector512<T> v1, Vector512<T> vb, int mode)
        where T : unmanaged
    {
        var c1 = c + Vector512<T>.Count;
        if (mode == ModeOverwrite)
        {
            Vector512.Store(v0, c);
            Vector512.Store(v1, c1);
        }
        else if (mode == ModeAdd)
        {
            Vector512.Store(Vector512.Load(c) + v0, c);
            Vector512.Store(Vector512.Load(c1) + v1, c1);
        }
        else
        {
            Vector512.Store(vb * Vector512.Load(c) + v0, c);
            Vector512.Store(vb * Vector512.Load(c1) + v1, c1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256<T>(T* c, Vector256<T> v0, Vector256<T> v1, Vector256<T> vb, int mode)
        where T : unmanaged
    {
        var c1 = c + Vector256<T>.Count;
        if (mode == ModeOverwrite)
        {
            Vector256.Store(v0, c);
            Vector256.Store(v1, c1);
        }
        else if (mode == ModeAdd)
        {
            Vector256.Store(Vector256.Load(c) + v0, c);
            Vector256.Store(Vector256.Load(c1) + v1, c1);
        }
        else
        {
            Vector256.Store(vb * Vector256.Load(c) + v0, c);
            Vector256.Store(vb * Vector256.Load(c1) + v1, c1);
        }
    }

    /// <summary>12 x (2 * Vector512&lt;T&gt;.Count) tile: 24 accumulators in zmm registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel512<T>(int kc, T* pa, T* pb, T* c, nint ldc, T beta, int mode)
        where T : unmanaged
    {
        const int MR = 12;
        var w = Vector512<T>.Count;
        if (Sse.IsSupported)
        {
            // The tile of C is touched once, after the k loop: start pulling its 2 x 12 cache lines in now.
            var cp = c;
            for (var i = 0; i < MR; i++, cp += ldc)
            {
                Sse.Prefetch0(cp);
                Sse.Prefetch0(cp + w);
            }
        }
        Vector512<T> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<T> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        Vector512<T> c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default;
        Vector512<T> c90 = default, c91 = default, ca0 = default, ca1 = default, cb0 = default, cb1 = default;
        for (var p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(pb);
            var b1 = Vector512.Load(pb + w);
            var av = Vector512.Create(pa[0]);
            c00 = Fma512(av, b0, c00);
            c01 = Fma512(av, b1, c01);
            av = Vector512.Create(pa[1]);
            c10 = Fma512(av, b0, c10);
            c11 = Fma512(av, b1, c11);
            av = Vector512.Create(pa[2]);
            c20 = Fma512(av, b0, c20);
            c21 = Fma512(av, b1, c21);
            av = Vector512.Create(pa[3]);
            c30 = Fma512(av, b0, c30);
            c31 = Fma512(av, b1, c31);
            av = Vector512.Create(pa[4]);
            c40 = Fma512(av, b0, c40);
            c41 = Fma512(av, b1, c41);
            av = Vector512.Create(pa[5]);
            c50 = Fma512(av, b0, c50);
            c51 = Fma512(av, b1, c51);
            av = Vector512.Create(pa[6]);
            c60 = Fma512(av, b0, c60);
            c61 = Fma512(av, b1, c61);
            av = Vector512.Create(pa[7]);
            c70 = Fma512(av, b0, c70);
            c71 = Fma512(av, b1, c71);
            av = Vector512.Create(pa[8]);
            c80 = Fma512(av, b0, c80);
            c81 = Fma512(av, b1, c81);
            av = Vector512.Create(pa[9]);
            c90 = Fma512(av, b0, c90);
            c91 = Fma512(av, b1, c91);
            av = Vector512.Create(pa[10]);
            ca0 = Fma512(av, b0, ca0);
            ca1 = Fma512(av, b1, ca1);
            av = Vector512.Create(pa[11]);
            cb0 = Fma512(av, b0, cb0);
            cb1 = Fma512(av, b1, cb1);
            pa += MR;
            pb += 2 * w;
        }
        var vb = Vector512.Create(beta);
        Store512(c, c00, c01, vb, mode);
        Store512(c + ldc, c10, c11, vb, mode);
        Store512(c + 2 * ldc, c20, c21, vb, mode);
        Store512(c + 3 * ldc, c30, c31, vb, mode);
        Store512(c + 4 * ldc, c40, c41, vb, mode);
        Store512(c + 5 * ldc, c50, c51, vb, mode);
        Store512(c + 6 * ldc, c60, c61, vb, mode);
        Store512(c + 7 * ldc, c70, c71, vb, mode);
        Store512(c + 8 * ldc, c80, c81, vb, mode);
        Store512(c + 9 * ldc, c90, c91, vb, mode);
        Store512(c + 10 * ldc, ca0, ca1, vb, mode);
        Store512(c + 11 * ldc, cb0, cb1, vb, mode);
    }

    /// <summary>6 x (2 * Vector256&lt;T&gt;.Count) tile: 12 accumulators (fits the 16 ymm registers of AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel256<T>(int kc, T* pa, T* pb, T* c, nint ldc, T beta, int mode)
        where T : unmanaged
    {
        const int MR = 6;
        var w = Vector256<T>.Count;
        Vector256<T> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<T> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (var p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(pb);
            var b1 = Vector256.Load(pb + w);
            var av = Vector256.Create(pa[0]);
            c00 = Fma256(av, b0, c00);
            c01 = Fma256(av, b1, c01);
            av = Vector256.Create(pa[1]);
            c10 = Fma256(av, b0, c10);
            c11 = Fma256(av, b1, c11);
            av = Vector256.Create(pa[2]);
            c20 = Fma256(av, b0, c20);
            c21 = Fma256(av, b1, c21);
            av = Vector256.Create(pa[3]);
            c30 = Fma256(av, b0, c30);
            c31 = Fma256(av, b1, c31);
            av = Vector256.Create(pa[4]);
            c40 = Fma256(av, b0, c40);
            c41 = Fma256(av, b1, c41);
            av = Vector256.Create(pa[5]);
            c50 = Fma256(av, b0, c50);
            c51 = Fma256(av, b1, c51);
            pa += MR;
            pb += 2 * w;
        }
        var vb = Vector256.Create(beta);
        Store256(c, c00, c01, vb, mode);
        Store256(c + ldc, c10, c11, vb, mode);
        Store256(c + 2 * ldc, c20, c21, vb, mode);
        Store256(c + 3 * ldc, c30, c31, vb, mode);
        Store256(c + 4 * ldc, c40, c41, vb, mode);
        Store256(c + 5 * ldc, c50, c51, vb, mode);
    }

    /// <summary>Portable 4 x 4 tile.</summary>
    private static void KernelScalar<T>(int kc, T* pa, T* pb, T* c, nint ldc, T beta, int mode)
        where T : unmanaged, INumberBase<T>
    {
        const int MR = 4, NR = 4;
        var acc = stackalloc T[MR * NR];
        for (var i = 0; i < MR * NR; i++)
            acc[i] = T.Zero;
        for (var p = 0; p < kc; p++)
        {
            for (var i = 0; i < MR; i++)
            {
                var ai = pa[i];
                for (var j = 0; j < NR; j++)
                    acc[i * NR + j] += ai * pb[j];
            }
            pa += MR;
            pb += NR;
        }
        MergeTile(acc, NR, c, ldc, MR, NR, beta, mode);
    }

    // ------------------------------------------------------------------------------------------------
    // Pack buffer pool
    // ------------------------------------------------------------------------------------------------

    /// <summary>A 64-byte aligned native block, pooled and reused; freed by its finalizer if ever dropped.</summary>
    private sealed class PackBuffer
    {
        private const int MaxPooled = 64;
        private static readonly PackBuffer?[] Pool = new PackBuffer?[MaxPooled];
        private static int _count;
        private static readonly Lock PoolLock = new();

        public byte* Pointer { get; private set; }

        private nuint _bytes;

        public static PackBuffer Rent(nuint bytes)
        {
            PackBuffer? buffer = null;
            lock (PoolLock)
            {
                if (_count > 0)
                {
                    buffer = Pool[--_count];
                    Pool[_count] = null;
                }
            }
            buffer ??= new PackBuffer();
            if (buffer._bytes < bytes)
            {
                if (buffer.Pointer != null)
                    NativeMemory.AlignedFree(buffer.Pointer);
                buffer.Pointer = null;
                buffer._bytes = 0;
                buffer.Pointer = (byte*)NativeMemory.AlignedAlloc(bytes, 64);
                buffer._bytes = bytes;
            }
            return buffer;
        }

        public static void Return(PackBuffer buffer)
        {
            lock (PoolLock)
            {
                if (_count < MaxPooled)
                {
                    Pool[_count++] = buffer;
                    return;
                }
            }
            buffer.Free();
            GC.SuppressFinalize(buffer);
        }

        private void Free()
        {
            if (Pointer != null)
                NativeMemory.AlignedFree(Pointer);
            Pointer = null;
            _bytes = 0;
        }

        ~PackBuffer() => Free();
    }
}
