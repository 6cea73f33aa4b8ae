using Frugal.Backends.Cpu;

namespace Frugal.Tests;

/// <summary>
/// Checks <see cref="Gemm"/> against a naive float64 triple loop.
/// </summary>
/// <remarks>
/// Tolerance: every output element is compared with the float64 reference using the classic dot-product error
/// bound, tol = f * (k + 3) * u * (|alpha| * sum_p |a_ip| * |b_pj| + |beta| * |c_ij|), with u the unit roundoff of the
/// type under test (2^-24 for float, 2^-53 for double), k + 3 covering the k-term sum plus the roundings of the
/// alpha, beta and final scaling, and a safety factor f = 2 (float) or 4 (double, where the reference itself
/// rounds as much as the code under test). Any real indexing bug misses whole terms of size ~|a||b| and
/// exceeds this bound by orders of magnitude (see <see cref="Checker_DetectsOneWrongTerm"/>).
/// Padding of A and B beyond the logical shape is filled with NaN (reading it poisons C), padding of C with
/// a sentinel that must survive, and with beta = 0 the logical part of C starts as NaN.
/// </remarks>
public unsafe class GemmTests
{
    private const double SentinelC = 12345.0;

    /// <summary>One problem instance in storage layout (row-major, with leading dimensions).</summary>
    private sealed class Problem
    {
        public int M, N, K;
        public bool TransA, TransB;
        public int Lda, Ldb, Ldc;
        public double[] A = [], B = [], C = [];

        public double GetA(int i, int p) => TransA ? A[p * Lda + i] : A[i * Lda + p];

        public double GetB(int p, int j) => TransB ? B[j * Ldb + p] : B[p * Ldb + j];

        public static Problem Create(int seed, bool transA, bool transB, int m, int n, int k, int pad, bool nanC)
        {
            var rng = new Random(seed);
            var p = new Problem { M = m, N = n, K = k, TransA = transA, TransB = transB };
            int aRows = transA ? k : m, aCols = transA ? m : k;
            int bRows = transB ? n : k, bCols = transB ? k : n;
            p.Lda = Math.Max(1, aCols + pad);
            p.Ldb = Math.Max(1, bCols + pad);
            p.Ldc = Math.Max(1, n + pad);
            p.A = Fill(rng, aRows, aCols, p.Lda, double.NaN, false);
            p.B = Fill(rng, bRows, bCols, p.Ldb, double.NaN, false);
            p.C = Fill(rng, m, n, p.Ldc, SentinelC, nanC);
            return p;
        }

        /// <summary>Values are float-representable so the float and double paths see identical inputs.</summary>
        private static double[] Fill(Random rng, int rows, int cols, int ld, double padding, bool nan)
        {
            var data = new double[Math.Max(1, rows * ld)];
            Array.Fill(data, padding);
            for (var r = 0; r < rows; r++)
            {
                for (var c = 0; c < cols; c++)
                    data[r * ld + c] = nan ? double.NaN : (float)(rng.NextDouble() * 2 - 1);
            }
            return data;
        }

        /// <summary>Expected C (storage layout, padding = sentinel) and the per-element error scale.</summary>
        public (double[] Expected, double[] Scale) Reference(double alpha, double beta)
        {
            // Dense copies of op(A) (m x k) and op(B) transposed (n x k) so the inner loop is a plain dot product.
            var opA = new double[M * K];
            var opBt = new double[N * K];
            for (var i = 0; i < M; i++)
            {
                for (var p = 0; p < K; p++)
                    opA[i * K + p] = GetA(i, p);
            }
            for (var j = 0; j < N; j++)
            {
                for (var p = 0; p < K; p++)
                    opBt[j * K + p] = GetB(p, j);
            }
            var expected = (double[])C.Clone();
            var scale = new double[C.Length];
            for (var i = 0; i < M; i++)
            {
                var aRow = opA.AsSpan(i * K, K);
                for (var j = 0; j < N; j++)
                {
                    var bCol = opBt.AsSpan(j * K, K);
                    double sum = 0, abs = 0;
                    for (var p = 0; p < aRow.Length; p++)
                    {
                        var prod = aRow[p] * bCol[p];
                        sum += prod;
                        abs += Math.Abs(prod);
                    }
                    var idx = i * Ldc + j;
                    var old = beta == 0 ? 0 : beta * C[idx];
                    expected[idx] = alpha * sum + old;
                    scale[idx] = Math.Abs(alpha) * abs + (beta == 0 ? 0 : Math.Abs(beta * C[idx]));
                }
            }
            return (expected, scale);
        }
    }

    /// <summary>Asserts every element of <paramref name="actual"/> is within the documented bound; padding exact.</summary>
    private static void Check(Problem p, double[] expected, double[] scale, double[] actual, double unitRoundoff,
        double factor, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = 0.0;
        for (var idx = 0; idx < expected.Length; idx++)
        {
            int i = idx / p.Ldc, j = idx % p.Ldc;
            if (i >= p.M || j >= p.N)
            {
                Assert.True(actual[idx] == SentinelC, $"{what}: C padding at ({i},{j}) was overwritten with {actual[idx]}");
                continue;
            }
            var tol = factor * (p.K + 3) * unitRoundoff * scale[idx] + 1e-300;
            var err = Math.Abs(actual[idx] - expected[idx]);
            Assert.True(err <= tol,
                $"{what}: C({i},{j}) = {actual[idx]:R}, expected {expected[idx]:R}, |err| {err:E3} > tol {tol:E3}");
            worst = Math.Max(worst, err / tol);
        }
        Assert.True(worst <= 1);
    }

    private static double[] RunFloat(Problem p, double alpha, double beta, GemmKernel kernel = GemmKernel.Auto,
        int threads = -1)
    {
        var a = Array.ConvertAll(p.A, x => (float)x);
        var b = Array.ConvertAll(p.B, x => (float)x);
        var c = Array.ConvertAll(p.C, x => (float)x);
        fixed (float* pa = a, pb = b, pc = c)
        {
            if (kernel == GemmKernel.Auto && threads < 0)
                Gemm.Sgemm(p.TransA, p.TransB, p.M, p.N, p.K, (float)alpha, pa, p.Lda, pb, p.Ldb, (float)beta, pc, p.Ldc);
            else
                Gemm.Run(kernel, threads < 0 ? Environment.ProcessorCount : threads, p.TransA, p.TransB, p.M, p.N, p.K,
                    (float)alpha, pa, p.Lda, pb, p.Ldb, (float)beta, pc, p.Ldc);
        }
        return Array.ConvertAll(c, x => (double)x);
    }

    private static double[] RunDouble(Problem p, double alpha, double beta, GemmKernel kernel = GemmKernel.Auto,
        int threads = -1)
    {
        var a = (double[])p.A.Clone();
        var b = (double[])p.B.Clone();
        var c = (double[])p.C.Clone();
        fixed (double* pa = a, pb = b, pc = c)
        {
            if (kernel == GemmKernel.Auto && threads < 0)
                Gemm.Dgemm(p.TransA, p.TransB, p.M, p.N, p.K, alpha, pa, p.Lda, pb, p.Ldb, beta, pc, p.Ldc);
            else
                Gemm.Run(kernel, threads < 0 ? Environment.ProcessorCount : threads, p.TransA, p.TransB, p.M, p.N, p.K,
                    alpha, pa, p.Lda, pb, p.Ldb, beta, pc, p.Ldc);
        }
        return c;
    }

    private const double FloatU = 1.0 / (1 << 24);
    private const double DoubleU = 1.0 / (1L << 53);

    public static TheoryData<bool, bool, int, int, int> Shapes()
    {
        int[][] shapes =
        [
            [0, 0, 0], [0, 5, 3], [4, 0, 3], [3, 4, 0], [1, 1, 1], [1, 7, 1], [7, 1, 1], [2, 3, 1], [1, 1, 9],
            [3, 5, 7], [12, 32, 5], [13, 33, 6], [11, 31, 129], [24, 64, 64], [17, 33, 65], [5, 200, 3], [200, 5, 3],
            [1, 257, 300], [257, 1, 300], [64, 64, 64], [36, 96, 520], [127, 129, 255], [300, 520, 700],
            [800, 40, 150], [3, 4200, 5], [100, 100, 1100],
            [20, 9, 8200], [33, 70, 12300],   // small C, long k: cut along k into chunks
        ];
        var data = new TheoryData<bool, bool, int, int, int>();
        foreach (var s in shapes)
        {
            foreach (var ta in new[] { false, true })
            {
                foreach (var tb in new[] { false, true })
                    data.Add(ta, tb, s[0], s[1], s[2]);
            }
        }
        return data;
    }

    /// <summary>(alpha, beta, NaN-filled C, extra leading-dimension padding) variants.</summary>
    private static readonly (double Alpha, double Beta, bool NanC, int Pad)[] Variants =
    [
        (1.0, 0.0, true, 0),
        (-0.75, 0.5, false, 3),
        (1.5, 1.0, false, 17),
        (2.0, 0.0, true, 1),
    ];

    private static IEnumerable<(double Alpha, double Beta, bool NanC, int Pad)> VariantsFor(int m, int n, int k)
        => (long)m * n * k > 20_000_000 ? Variants.Take(1) : (long)m * n * k > 2_000_000 ? Variants.Take(2) : Variants;

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Sgemm_MatchesReference(bool transA, bool transB, int m, int n, int k)
    {
        var seed = HashCode.Combine(m, n, k, transA, transB) & 0xFFFF;
        foreach (var (alpha, beta, nanC, pad) in VariantsFor(m, n, k))
        {
            var p = Problem.Create(seed, transA, transB, m, n, k, pad, nanC);
            var (expected, scale) = p.Reference(alpha, beta);
            Check(p, expected, scale, RunFloat(p, alpha, beta), FloatU, 2,
                $"sgemm tA={transA} tB={transB} {m}x{n}x{k} alpha={alpha} beta={beta} pad={pad}");
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Dgemm_MatchesReference(bool transA, bool transB, int m, int n, int k)
    {
        var seed = HashCode.Combine(k, n, m, transB, transA) & 0xFFFF;
        foreach (var (alpha, beta, nanC, pad) in VariantsFor(m, n, k))
        {
            var p = Problem.Create(seed, transA, transB, m, n, k, pad, nanC);
            var (expected, scale) = p.Reference(alpha, beta);
            Check(p, expected, scale, RunDouble(p, alpha, beta), DoubleU, 4,
                $"dgemm tA={transA} tB={transB} {m}x{n}x{k} alpha={alpha} beta={beta} pad={pad}");
        }
    }

    /// <summary>Kernel ids (<see cref="GemmKernel"/> is internal, so theories take its integer value).</summary>
    public static TheoryData<int, int> Kernels()
    {
        var data = new TheoryData<int, int>();
        foreach (var kernel in new[] { GemmKernel.Vector512, GemmKernel.Vector256, GemmKernel.Scalar })
        {
            data.Add((int)kernel, 1);
            data.Add((int)kernel, 3);
        }
        return data;
    }

    /// <summary>Every kernel family is exercised whatever the machine (unsupported ones run emulated).</summary>
    [Theory]
    [MemberData(nameof(Kernels))]
    public void AllKernels_MatchReference(int kernelId, int threads)
    {
        var kernel = (GemmKernel)kernelId;
        int[][] shapes = [[1, 1, 1], [6, 16, 7], [13, 37, 19], [50, 70, 300], [130, 67, 90]];
        var seed = 17;
        foreach (var s in shapes)
        {
            foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
            {
                foreach (var (alpha, beta, nanC, pad) in Variants)
                {
                    var p = Problem.Create(seed++, ta, tb, s[0], s[1], s[2], pad, nanC);
                    var (expected, scale) = p.Reference(alpha, beta);
                    var what = $"{kernel}/{threads} tA={ta} tB={tb} {s[0]}x{s[1]}x{s[2]} alpha={alpha} beta={beta}";
                    Check(p, expected, scale, RunFloat(p, alpha, beta, kernel, threads), FloatU, 2, "s " + what);
                    Check(p, expected, scale, RunDouble(p, alpha, beta, kernel, threads), DoubleU, 4, "d " + what);
                }
            }
        }
    }

    [Fact]
    public void Threading_IsBitwiseDeterministic()
    {
        foreach (var (m, n, k) in new[] { (301, 257, 333), (40, 900, 260), (1000, 30, 64), (30, 20, 9000) })
        {
            var p = Problem.Create(5, false, true, m, n, k, 2, false);
            var one = RunFloat(p, 0.5, 0.25, GemmKernel.Auto, 1);
            var two = RunFloat(p, 0.5, 0.25, GemmKernel.Auto, 2);
            var many = RunFloat(p, 0.5, 0.25, GemmKernel.Auto, 7);
            Assert.Equal(one, two);
            Assert.Equal(one, many);
            var d1 = RunDouble(p, 0.5, 0.25, GemmKernel.Auto, 1);
            var d3 = RunDouble(p, 0.5, 0.25, GemmKernel.Auto, 3);
            Assert.Equal(d1, d3);
        }
    }

    [Theory]
    [InlineData(0.0, 0.0)]
    [InlineData(0.0, 0.5)]
    [InlineData(0.0, 1.0)]
    public void AlphaZeroOrKZero_ScalesC(double alpha, double beta)
    {
        foreach (var k in new[] { 0, 4 })
        {
            var p = Problem.Create(3, false, false, 5, 6, k, 2, beta == 0);
            var a = alpha == 0 && k == 4 ? 0.0 : 1.0;
            var (expected, scale) = p.Reference(a, beta);
            Check(p, expected, scale, RunFloat(p, a, beta), FloatU, 2, $"sgemm k={k} alpha={a} beta={beta}");
            Check(p, expected, scale, RunDouble(p, a, beta), DoubleU, 4, $"dgemm k={k} alpha={a} beta={beta}");
            if (beta == 0)
            {
                var c = RunFloat(p, a, beta);
                Assert.DoesNotContain(c, double.IsNaN);
            }
        }
    }

    /// <summary>The checker must reject a result that misses or garbles a single product term.</summary>
    [Fact]
    public void Checker_DetectsOneWrongTerm()
    {
        var p = Problem.Create(11, false, false, 17, 33, 65, 1, false);
        var (expected, scale) = p.Reference(1, 0.5);
        var c = RunFloat(p, 1, 0.5);
        Check(p, expected, scale, c, FloatU, 2, "baseline");
        var idx = 5 * p.Ldc + 7;
        c[idx] -= p.GetA(5, 30) * p.GetB(30, 7);
        Assert.ThrowsAny<Exception>(() => Check(p, expected, scale, c, FloatU, 2, "perturbed"));
        var wrongPad = (double[])c.Clone();
        wrongPad[idx] = expected[idx];
        wrongPad[p.N] = 0;
        Assert.ThrowsAny<Exception>(() => Check(p, expected, scale, wrongPad, FloatU, 2, "padding"));
    }

    public static TheoryData<int, int, int, int, bool, bool> BatchCases() => new()
    {
        { 0, 3, 4, 5, false, false },
        { 1, 3, 4, 5, false, false },
        { 5, 3, 4, 5, false, false },
        { 5, 3, 4, 5, true, false },
        { 5, 3, 4, 5, false, true },
        { 7, 17, 33, 65, true, false },
        { 7, 17, 33, 65, false, true },
        { 64, 9, 12, 40, false, false },
        { 64, 9, 12, 40, true, false },
        { 3, 100, 90, 130, false, true },
        { 2, 260, 250, 260, false, false }, // large enough to thread inside each product instead of over the batch

    };

    [Theory]
    [MemberData(nameof(BatchCases))]
    public void Batched_MatchesPerMatrixReference(int batch, int m, int n, int k, bool broadcastA, bool broadcastB)
    {
        var large = (long)m * n * k > 2_000_000;
        foreach (var (ta, tb) in new[] { (false, false), (true, true), (true, false) }.Take(large ? 1 : 3))
        {
            foreach (var (alpha, beta, nanC, pad) in Variants.Take(large ? 1 : 2))
            {
                var problems = new Problem[batch];
                for (var i = 0; i < batch; i++)
                {
                    problems[i] = Problem.Create(100 + i, ta, tb, m, n, k, pad, nanC);
                    if (broadcastA)
                        problems[i].A = problems[0].A;
                    if (broadcastB)
                        problems[i].B = problems[0].B;
                }
                var p0 = Problem.Create(100, ta, tb, m, n, k, pad, nanC);
                long sA = broadcastA ? 0 : p0.A.Length + 5, sB = broadcastB ? 0 : p0.B.Length + 3, sC = p0.C.Length + 7;
                var aF = new float[Math.Max(1, (batch - 1) * sA + p0.A.Length)];
                var bF = new float[Math.Max(1, (batch - 1) * sB + p0.B.Length)];
                var cF = new float[Math.Max(1, (batch - 1) * sC + p0.C.Length)];
                var aD = new double[aF.Length];
                var bD = new double[bF.Length];
                var cD = new double[cF.Length];
                for (var i = 0; i < batch; i++)
                {
                    Place(problems[i].A, aF, aD, i * sA);
                    Place(problems[i].B, bF, bD, i * sB);
                    Place(problems[i].C, cF, cD, i * sC);
                }
                fixed (float* pa = aF, pb = bF, pc = cF)
                {
                    Gemm.SgemmBatched(ta, tb, batch, m, n, k, (float)alpha, pa, p0.Lda, sA, pb, p0.Ldb, sB,
                        (float)beta, pc, p0.Ldc, sC);
                }
                fixed (double* pa = aD, pb = bD, pc = cD)
                {
                    Gemm.DgemmBatched(ta, tb, batch, m, n, k, alpha, pa, p0.Lda, sA, pb, p0.Ldb, sB, beta, pc, p0.Ldc, sC);
                }
                for (var i = 0; i < batch; i++)
                {
                    var (expected, scale) = problems[i].Reference(alpha, beta);
                    var len = problems[i].C.Length;
                    var gotF = new double[len];
                    var gotD = new double[len];
                    for (var e = 0; e < len; e++)
                    {
                        gotF[e] = cF[i * sC + e];
                        gotD[e] = cD[i * sC + e];
                    }
                    var what = $"batch {i}/{batch} tA={ta} tB={tb} {m}x{n}x{k} bcA={broadcastA} bcB={broadcastB}";
                    Check(problems[i], expected, scale, gotF, FloatU, 2, "s " + what);
                    Check(problems[i], expected, scale, gotD, DoubleU, 4, "d " + what);
                }
            }
        }
    }

    private static void Place(double[] src, float[] f, double[] d, long offset)
    {
        for (var e = 0; e < src.Length; e++)
        {
            f[offset + e] = (float)src[e];
            d[offset + e] = src[e];
        }
    }

    [Fact]
    public void NegativeSizes_Throw()
    {
        var x = new float[4];
        fixed (float* p = x)
        {
            var ptr = (nint)p;
            Assert.Throws<ArgumentOutOfRangeException>(
                () => Gemm.Sgemm(false, false, -1, 1, 1, 1, (float*)ptr, 1, (float*)ptr, 1, 0, (float*)ptr, 1));
            Assert.Throws<ArgumentOutOfRangeException>(
                () => Gemm.Sgemm(false, false, 2, 2, 2, 1, (float*)ptr, 1, (float*)ptr, 2, 0, (float*)ptr, 2));
        }
    }
}
