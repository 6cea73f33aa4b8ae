using Frugal.Optim;
using Frugal.Backends;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>Forward values (and the kernels behind gradients and optimizers) in F32 on every device against naive
/// float64 loops written here, independent of the engine.</summary>
/// <remarks>
/// Tolerances are |actual - ref| ≤ atol + rtol·|ref| with u = 2^-24, the unit roundoff of f32 (inputs are
/// f32-representable, so the reference sees exactly the device's inputs):
/// <list type="bullet">
/// <item>+ - · / √, max/min, copies, comparisons, pooling max: correctly rounded, rtol = 2u (exact where stated).</item>
/// <item>exp, log, tanh, sigmoid, gelu, pow (vectorised approximations): atol 1e-6, rtol 1e-6 (≈ 16 ulp).</item>
/// <item>dot products, GEMM and convolution over k terms: the recursive-summation bound 2·(k+2)·u·Σ|terms|,
/// computed per output element by the reference (a missing or doubled term is ~|term|, orders of magnitude above
/// it). Reductions (k up to 60000) use the pairwise bound 2·(log2 k + 2)·u·Σ|terms| instead: the worst case of a
/// sequential sum would hide whole missing terms, and on random-sign data rounding errors random-walk far below it.</item>
/// <item>softmax, log-softmax, layer norm, cross-entropy (a few roundings per element on O(1) values):
/// atol 2e-6, rtol 1e-5.</item>
/// <item>optimizer steps (a few roundings per step, several steps): atol 1e-6, rtol 1e-5.</item>
/// </list>
/// </remarks>
public class ConformanceTests
{
    private const double U = 1.0 / (1 << 24);

    private static readonly double Exact = 2 * U;

    // ---- naive helpers over row-major double[] ----

    private static int Numel(int[] shape) => (int)new Shape(shape).Numel;

    private static int[] Unravel(int flat, int[] shape)
    {
        var idx = new int[shape.Length];
        for (var d = shape.Length - 1; d >= 0; d--)
        {
            idx[d] = flat % shape[d];
            flat /= shape[d];
        }
        return idx;
    }

    /// <summary>Flat index into <paramref name="shape"/> of an index of a (right-aligned) broadcast shape.</summary>
    private static int Ravel(int[] idx, int[] shape)
    {
        var pad = idx.Length - shape.Length;
        var flat = 0;
        for (var d = 0; d < shape.Length; d++)
            flat = flat * shape[d] + (shape[d] == 1 ? 0 : idx[d + pad]);
        return flat;
    }

    private static int[] BroadcastShape(int[] a, int[] b)
    {
        var r = Math.Max(a.Length, b.Length);
        var s = new int[r];
        for (var i = 0; i < r; i++)
        {
            var da = i < r - a.Length ? 1 : a[i - (r - a.Length)];
            var db = i < r - b.Length ? 1 : b[i - (r - b.Length)];
            s[i] = Math.Max(da, db);
        }
        return s;
    }

    private static double[] Permuted(double[] x, int[] shape, int[] perm)
    {
        var outShape = perm.Select(p => shape[p]).ToArray();
        var y = new double[x.Length];
        for (var i = 0; i < y.Length; i++)
        {
            var oi = Unravel(i, outShape);
            var xi = new int[shape.Length];
            for (var d = 0; d < perm.Length; d++)
                xi[perm[d]] = oi[d];
            y[i] = x[Ravel(xi, shape)];
        }
        return y;
    }

    private static void AssertWithin(double[] expected, double[] actual, double[] tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            if (!(Math.Abs(actual[i] - expected[i]) <= tol[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected {expected[i]:R} (tol {tol[i]:E3})");
        }
    }

    private static Tensor F32(Device d, double[] v, params int[] shape) => On(d, DType.F32, v, shape);

    // ---- elementwise ----

    public static TheoryData<string, string, string> BinaryCases()
    {
        var data = new TheoryData<string, string, string>();
        string[][] shapes = [["2x3x4", "3x1"], ["5x1", "1x7"], ["", "4x5"], ["4x5", ""], ["64x600", "600"], ["6x7", "6x7T"]];
        foreach (var dev in Devices)
        {
            foreach (var s in shapes)
                data.Add(dev.Data, s[0], s[1]);
        }
        return data;
    }

    private static readonly BinaryOp[] Arithmetic = [BinaryOp.Add, BinaryOp.Sub, BinaryOp.Mul, BinaryOp.Div, BinaryOp.Pow, BinaryOp.Maximum, BinaryOp.Minimum];

    private static readonly BinaryOp[] Comparisons = [BinaryOp.Eq, BinaryOp.Ne, BinaryOp.Lt, BinaryOp.Le, BinaryOp.Gt, BinaryOp.Ge];

    private static double RefBinary(BinaryOp op, double a, double b) => op switch
    {
        BinaryOp.Add => a + b,
        BinaryOp.Sub => a - b,
        BinaryOp.Mul => a * b,
        BinaryOp.Div => a / b,
        BinaryOp.Pow => Math.Pow(a, b),
        BinaryOp.Maximum => Math.Max(a, b),
        BinaryOp.Minimum => Math.Min(a, b),
        BinaryOp.Eq => a == b ? 1 : 0,
        BinaryOp.Ne => a != b ? 1 : 0,
        BinaryOp.Lt => a < b ? 1 : 0,
        BinaryOp.Le => a <= b ? 1 : 0,
        BinaryOp.Gt => a > b ? 1 : 0,
        _ => a >= b ? 1 : 0,
    };

    private static Tensor ApplyBinary(BinaryOp op, Tensor a, Tensor b) => op switch
    {
        BinaryOp.Add => F.Add(a, b),
        BinaryOp.Sub => F.Sub(a, b),
        BinaryOp.Mul => F.Mul(a, b),
        BinaryOp.Div => F.Div(a, b),
        BinaryOp.Pow => F.Pow(a, b),
        BinaryOp.Maximum => F.Maximum(a, b),
        BinaryOp.Minimum => F.Minimum(a, b),
        BinaryOp.Eq => F.Eq(a, b),
        BinaryOp.Ne => F.Ne(a, b),
        BinaryOp.Lt => F.Lt(a, b),
        BinaryOp.Le => F.Le(a, b),
        BinaryOp.Gt => F.Gt(a, b),
        _ => F.Ge(a, b),
    };

    [Theory]
    [MemberData(nameof(BinaryCases))]
    public void Binary_Broadcasting(string device, string shapeA, string shapeB)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        var transposeB = shapeB.EndsWith('T');
        int[] sa = shapeA.Length == 0 ? [] : [.. shapeA.Split('x').Select(int.Parse)];
        int[] sb = shapeB.Length == 0 ? [] : [.. shapeB.TrimEnd('T').Split('x').Select(int.Parse)];
        // b is stored transposed (a non-contiguous operand) when the case asks for it.
        int[] storedB = transposeB ? [sb[1], sb[0]] : sb;
        var ys = BroadcastShape(sa, sb);
        int na = Numel(sa), nb = Numel(sb), ny = Numel(ys);

        foreach (var op in Arithmetic.Concat(Comparisons))
        {
            var comparison = op.IsComparison();
            // Comparisons see many ties (small integers); Pow a positive base; Div a divisor away from 0.
            var a = comparison ? Uniform(1, na).Select(v => Math.Round(v * 2)).ToArray() : op == BinaryOp.Pow ? Uniform(1, na, 0.1, 2) : Uniform(1, na, -2, 2);
            var bStored = comparison ? Uniform(2, nb).Select(v => Math.Round(v * 2)).ToArray() : op == BinaryOp.Div ? AwayFromZero(2, nb, 0.25, 2) : Uniform(2, nb, -2, 2);
            var b = transposeB ? Permuted(bStored, storedB, [1, 0]) : bStored;
            using var ta = F32(dev, a, sa);
            using var tbStored = F32(dev, bStored, storedB);
            using var tb = transposeB ? tbStored.Transpose(0, 1) : tbStored.Contiguous();
            using var ty = ApplyBinary(op, ta, tb);
            Assert.Equal(ys, ty.Shape.ToArray());
            var expected = new double[ny];
            for (var i = 0; i < ny; i++)
            {
                var idx = Unravel(i, ys);
                expected[i] = RefBinary(op, a[Ravel(idx, sa)], b[Ravel(idx, sb)]);
            }
            if (comparison)
            {
                Assert.Equal(DType.U8, ty.DType);
                Assert.Equal(expected, ty.ToArray<byte>().Select(v => (double)v));
            }
            else
            {
                var transcendental = op == BinaryOp.Pow;
                AssertClose(expected, Values(ty), transcendental ? 1e-6 : 0, transcendental ? 1e-6 : Exact, $"{op} {shapeA}·{shapeB}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Where(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        var a = Uniform(1, 12);
        var b = Uniform(2, 4);
        byte[] c = [1, 0, 0];
        using var tc = Tensor.FromArray<byte>(c, new Shape(3, 1), dev);
        using var ta = F32(dev, a, 3, 4);
        using var tb = F32(dev, b, 4);
        using var y = F.Where(tc, ta, tb);
        var expected = Enumerable.Range(0, 12).Select(i => c[i / 4] != 0 ? a[i] : b[i % 4]).ToArray();
        Assert.Equal(expected, Values(y));
    }

    /// <summary>Every device with every one of <paramref name="values"/>: the cases of a theory over one parameter.</summary>
    private static TheoryData<string, T> OnEveryDevice<T>(params T[] values)
    {
        var data = new TheoryData<string, T>();
        foreach (var dev in Devices)
        {
            foreach (var value in values)
                data.Add(dev.Data, value);
        }
        return data;
    }

    public static TheoryData<string, string> UnaryCases()
        => OnEveryDevice("Neg", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Gelu", "Sqrt", "Abs", "AddScalar", "MulScalar", "PowScalar");

    [Theory]
    [MemberData(nameof(UnaryCases))]
    public void Unary(string device, string op)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 37, cols = 1000;   // above the parallel threshold
        var positive = op is "Log" or "Sqrt" or "PowScalar";
        var x = positive ? Uniform(3, rows * cols, 1e-3, 20) : Uniform(3, rows * cols, -8, 8);
        Func<double, double> reference = op switch
        {
            "Neg" => v => -v,
            "Exp" => Math.Exp,
            "Log" => Math.Log,
            "Tanh" => Math.Tanh,
            "Sigmoid" => v => 1 / (1 + Math.Exp(-v)),
            "Relu" => v => Math.Max(v, 0),
            "Gelu" => v => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))),
            "Sqrt" => Math.Sqrt,
            "Abs" => Math.Abs,
            "AddScalar" => v => v + 1.25,
            "MulScalar" => v => v * -0.75,
            "PowScalar" => v => Math.Pow(v, 1.5),
            _ => throw new ArgumentException(op),
        };
        var f = UnaryMethods.GetValueOrDefault(op) ?? op switch
        {
            "AddScalar" => t => t.Add(1.25),
            "MulScalar" => t => t.Mul(-0.75),
            "PowScalar" => t => t.Pow(1.5),
            _ => throw new ArgumentException(op),
        };
        var transcendental = op is "Exp" or "Log" or "Tanh" or "Sigmoid" or "Gelu" or "PowScalar";
        var expected = x.Select(reference).ToArray();
        using var tx = F32(dev, x, rows, cols);
        using var y = f(tx);
        AssertClose(expected, Values(y), transcendental ? 1e-6 : 0, transcendental ? 1e-6 : Exact, op);
        // Same op on a transposed (strided) view.
        using var tt = F32(dev, Permuted(x, [rows, cols], [1, 0]), cols, rows);
        using var view = tt.Transpose(0, 1);
        using var yv = f(view);
        AssertClose(expected, Values(yv), transcendental ? 1e-6 : 0, transcendental ? 1e-6 : Exact, op + " (strided)");
    }

    public static TheoryData<string, string> SmoothUnaryCases() => OnEveryDevice("Exp", "Tanh", "Sigmoid", "Gelu");

    /// <summary>The F32 backward of the smooth unary ops over a long span (many vector chunks and threads, inputs
    /// out to ±20 where GELU and the sigmoid saturate) against the float64 derivative times a random dy.</summary>
    [Theory]
    [MemberData(nameof(SmoothUnaryCases))]
    public void SmoothUnaryBackward(string device, string op)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 37, cols = 1000;
        var x = Uniform(4, rows * cols, op == "Exp" ? -8 : -20, op == "Exp" ? 8 : 20);
        var dy = Uniform(5, rows * cols, -1, 1);
        Func<double, double> derivative = op switch
        {
            "Exp" => Math.Exp,
            "Tanh" => v => 1 - Math.Tanh(v) * Math.Tanh(v),
            "Sigmoid" => v => Math.Exp(-v) / ((1 + Math.Exp(-v)) * (1 + Math.Exp(-v))),
            "Gelu" => v =>
            {
                const double c = 0.7978845608028654;
                var t = Math.Tanh(c * (v + 0.044715 * v * v * v));
                return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * 0.044715 * v * v);
            },
            _ => throw new ArgumentException(op),
        };
        var expected = x.Select((v, i) => dy[i] * derivative(v)).ToArray();
        var tx = F32(dev, x, rows, cols);
        tx.RequiresGrad = true;
        var y = UnaryMethods[op](tx);
        y.Backward(F32(dev, dy, rows, cols));
        AssertClose(expected, Values(tx.Grad!), 1e-5, 2e-6, op + " backward");
    }

    /// <summary>Rank-4 permuted views through the strided row loops (copy, binary op, where) above the parallel
    /// threshold, so blocks start mid-shape and every merged dim carries.</summary>
    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void PermutedRank4Views_CopyAddAndWhere(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        int[] shape = [6, 7, 9, 101], perm = [2, 0, 3, 1];
        var x = Uniform(51, Numel(shape), -3, 3);
        var z = Uniform(52, Numel(shape), -3, 3);
        var px = Permuted(x, shape, perm);
        var pz = Permuted(z, shape, perm);
        var viewShape = perm.Select(d => shape[d]).ToArray();
        using var tx = F32(dev, x, shape);
        using var tz = F32(dev, z, shape);
        using var vx = tx.Permute(perm);
        using var vz = tz.Permute(perm);
        using var copied = vx.Contiguous();
        Assert.Equal(px.Select(v => (double)(float)v), Values(copied));
        using var sum = vx + vz;
        AssertClose(px.Zip(pz, (a, b) => (double)((float)a + (float)b)).ToArray(), Values(sum), 0, 0, "permuted add");
        using var mask = F.Gt(vx, vz);
        using var picked = F.Where(mask, vx, vz);
        Assert.Equal(px.Zip(pz, (a, b) => (double)((float)a > (float)b ? (float)a : (float)b)), Values(picked));
        Assert.Equal(viewShape, picked.Shape.ToArray());
    }

    // ---- reductions ----

    public static TheoryData<string, string> ReduceCases() => OnEveryDevice("", "0", "1", "2", "0,1", "0,2", "1,2", "0,1,2");

    /// <summary>Reference reduction of x (shape) over axes: values, and Σ|x| per output (for the sum bound).</summary>
    private static (double[] Sum, double[] Max, double[] Min, double[] Abs, int Count) RefReduce(double[] x, int[] shape, int[] axes)
    {
        var kept = shape.Select((s, d) => axes.Contains(d) ? 1 : s).ToArray();
        var n = Numel(kept);
        var sum = new double[n];
        var abs = new double[n];
        var max = Enumerable.Repeat(double.NegativeInfinity, n).ToArray();
        var min = Enumerable.Repeat(double.PositiveInfinity, n).ToArray();
        for (var i = 0; i < x.Length; i++)
        {
            var o = Ravel(Unravel(i, shape), kept);
            sum[o] += x[i];
            abs[o] += Math.Abs(x[i]);
            max[o] = Math.Max(max[o], x[i]);
            min[o] = Math.Min(min[o], x[i]);
        }
        return (sum, max, min, abs, x.Length / n);
    }

    [Theory]
    [MemberData(nameof(ReduceCases))]
    public void Reductions(string device, string axesText)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        int[] axes = axesText.Length == 0 ? [0, 1, 2] : [.. axesText.Split(',').Select(int.Parse)];
        foreach (var shape in new[] { new[] { 4, 5, 6 }, [40, 30, 50] })
        {
            var x = Uniform(5, Numel(shape), -3, 3);
            var (sum, max, min, abs, count) = RefReduce(x, shape, axes);
            var sumTol = abs.Select(a => 2 * (Math.Log2(count) + 2) * U * a + 1e-30).ToArray();
            var mean = sum.Select(s => s / count).ToArray();
            var meanTol = sumTol.Select(t => t / count + Exact * 8).ToArray();
            // Contiguous input, and the same values through a permuted view.
            using var contiguous = F32(dev, x, shape);
            using var stored = F32(dev, Permuted(x, shape, [2, 0, 1]), shape[2], shape[0], shape[1]);
            using var permuted = stored.Permute(1, 2, 0);
            foreach (var (t, layout) in new[] { (contiguous, "contiguous"), (permuted, "permuted") })
            {
                foreach (var keepDim in new[] { true, false })
                {
                    using var s = F.Sum(t, axes, keepDim);
                    using var m = F.Mean(t, axes, keepDim);
                    using var mx = F.Max(t, axes, keepDim);
                    using var mn = F.Min(t, axes, keepDim);
                    var expectRank = keepDim ? 3 : 3 - axes.Length;
                    Assert.Equal(expectRank, s.Rank);
                    var what = $"[{string.Join(",", shape)}] over {axesText} {layout} keepDim={keepDim}";
                    AssertWithin(sum, Values(s), sumTol, "Sum " + what);
                    AssertWithin(mean, Values(m), meanTol, "Mean " + what);
                    Assert.Equal(max, Values(mx));
                    Assert.Equal(min, Values(mn));
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void ArgMax(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        // Small integers: many ties, where the first index wins.
        int[] shape = [7, 9, 5];
        var x = Uniform(6, Numel(shape), -2, 2).Select(v => Math.Round(v)).ToArray();
        using var t = F32(dev, x, shape);
        using var stored = F32(dev, Permuted(x, shape, [1, 2, 0]), 9, 5, 7);
        using var view = stored.Permute(2, 0, 1);
        for (var axis = 0; axis < 3; axis++)
        {
            var kept = (int[])shape.Clone();
            kept[axis] = 1;
            var expected = new int[Numel(kept)];
            for (var o = 0; o < expected.Length; o++)
            {
                var idx = Unravel(o, kept);
                var best = double.NegativeInfinity;
                for (var i = 0; i < shape[axis]; i++)
                {
                    idx[axis] = i;
                    var v = x[Ravel(idx, shape)];
                    if (v > best)
                    {
                        best = v;
                        expected[o] = i;
                    }
                }
            }
            using var a = F.ArgMax(t, axis);
            using var av = F.ArgMax(view, axis, keepDim: true);
            Assert.Equal(DType.I32, a.DType);
            Assert.Equal(expected, a.ToArray<int>());
            Assert.Equal(kept, av.Shape.ToArray());
            Assert.Equal(expected, av.ToArray<int>());
        }
    }

    // ---- matrix products ----

    public static TheoryData<string, bool, bool> MatMulCases()
    {
        var data = new TheoryData<string, bool, bool>();
        foreach (var dev in Devices)
        {
            foreach (var ta in new[] { false, true })
            {
                foreach (var tb in new[] { false, true })
                    data.Add(dev.Data, ta, tb);
            }
        }
        return data;
    }

    /// <summary>op(a)·op(b) of batch-broadcast stacks, with the per-element bound 2·k·u·Σ|a||b|.</summary>
    private static (double[] Y, double[] Tol, int[] Shape) RefMatMul(double[] a, int[] sa, double[] b, int[] sb, bool ta, bool tb)
    {
        int m = ta ? sa[^1] : sa[^2], k = ta ? sa[^2] : sa[^1], n = tb ? sb[^2] : sb[^1];
        var batch = BroadcastShape(sa[..^2], sb[..^2]);
        int[] ys = [.. batch, m, n];
        var y = new double[Numel(ys)];
        var tol = new double[y.Length];
        for (var o = 0; o < y.Length; o++)
        {
            var idx = Unravel(o, ys);
            int i = idx[^2], j = idx[^1];
            var bi = idx[..^2];
            double s = 0, abs = 0;
            for (var p = 0; p < k; p++)
            {
                int[] ia = [.. bi, ta ? p : i, ta ? i : p];
                int[] ib = [.. bi, tb ? j : p, tb ? p : j];
                var t = a[Ravel(ia, sa)] * b[Ravel(ib, sb)];
                s += t;
                abs += Math.Abs(t);
            }
            y[o] = s;
            tol[o] = 2 * (k + 2) * U * abs + 1e-30;
        }
        return (y, tol, ys);
    }

    [Theory]
    [MemberData(nameof(MatMulCases))]
    public void MatMul(string device, bool transA, bool transB)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        (int[] A, int[] B)[] cases =
        [
            ([70, 130], [130, 90]),            // 2-D, several GEMM blocks
            ([2, 3, 17, 33], [3, 33, 9]),     // batch dims broadcast [2, 3] · [3]
            ([2, 1, 5, 6], [1, 4, 6, 7]),     // [2, 1] · [1, 4]
            ([3, 11, 13], [13, 6]),            // 3-D · 2-D (folded when not transA)
            ([8, 1], [1, 8]),                  // outer product
        ];
        foreach (var (la, lb) in cases)
        {
            // Shapes are logical (op(a): m×k); store the transposed layout when asked.
            int[] sa = transA ? [.. la[..^2], la[^1], la[^2]] : la;
            int[] sb = transB ? [.. lb[..^2], lb[^1], lb[^2]] : lb;
            var a = Uniform(7, Numel(sa));
            var b = Uniform(8, Numel(sb));
            var (y, tol, ys) = RefMatMul(a, sa, b, sb, transA, transB);
            using var ta = F32(dev, a, sa);
            using var tb = F32(dev, b, sb);
            using var r = F.MatMul(ta, tb, transA, transB);
            Assert.Equal(ys, r.Shape.ToArray());
            AssertWithin(y, Values(r), tol, $"MatMul {string.Join("x", la)}·{string.Join("x", lb)} tA={transA} tB={transB}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void MatMul_StridedViews(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        // a: a transposed view of a stored [k, m]; b: a narrowed view (rows of a wider matrix).
        var aStored = Uniform(9, 12 * 10);
        var bWide = Uniform(10, 12 * 20);
        using var tas = F32(dev, aStored, 12, 10);
        using var ta = tas.Transpose(0, 1);                 // [10, 12]
        using var tbw = F32(dev, bWide, 12, 20);
        using var tb = tbw.Narrow(1, 3, 7);                 // [12, 7], row stride 20
        using var r = ta.MatMul(tb);
        var a = Permuted(aStored, [12, 10], [1, 0]);
        var b = new double[12 * 7];
        for (var p = 0; p < 12; p++)
        {
            for (var j = 0; j < 7; j++)
                b[p * 7 + j] = bWide[p * 20 + 3 + j];
        }
        var (y, tol, _) = RefMatMul(a, [10, 12], b, [12, 7], false, false);
        AssertWithin(y, Values(r), tol, "MatMul of views");
    }

    // ---- normalisation and losses ----

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Softmax_And_LogSoftmax(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 9, cols = 37;
        // Large logits: a naive exp would overflow in f32.
        var x = Uniform(11, rows * cols, -60, 60);
        foreach (var dim in new[] { 1, 0 })
        {
            var sm = new double[x.Length];
            var lsm = new double[x.Length];
            int outer = dim == 1 ? rows : cols, inner = dim == 1 ? cols : rows;
            for (var o = 0; o < outer; o++)
            {
                int At(int i) => dim == 1 ? o * cols + i : i * cols + o;
                var max = Enumerable.Range(0, inner).Max(i => x[At(i)]);
                var sum = Enumerable.Range(0, inner).Sum(i => Math.Exp(x[At(i)] - max));
                for (var i = 0; i < inner; i++)
                {
                    sm[At(i)] = Math.Exp(x[At(i)] - max) / sum;
                    lsm[At(i)] = x[At(i)] - max - Math.Log(sum);
                }
            }
            using var t = F32(dev, x, rows, cols);
            using var s = F.Softmax(t, dim);
            using var l = F.LogSoftmax(t, dim);
            AssertClose(sm, Values(s), 2e-6, 1e-5, $"Softmax dim {dim}");
            AssertClose(lsm, Values(l), 2e-6, 1e-5, $"LogSoftmax dim {dim}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void CrossEntropy(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 12, classes = 10;
        var x = Uniform(12, rows * classes, -20, 20);
        int[] targets = [3, 0, 9, -100, 5, 5, 1, -100, 7, 2, 8, 6];
        foreach (var ignore in new[] { -100, 5 })
        {
            double total = 0;
            var counted = 0;
            for (var r = 0; r < rows; r++)
            {
                if (targets[r] == ignore || targets[r] < 0)
                    continue;
                var row = x.Skip(r * classes).Take(classes).ToArray();
                var max = row.Max();
                total += max + Math.Log(row.Sum(v => Math.Exp(v - max))) - row[targets[r]];
                counted++;
            }
            // Rows whose target is the other ignore value (-100 when ignoring 5) are invalid classes: use only valid ones.
            var valid = targets.Select(t => t < 0 ? ignore : t).ToArray();
            using var t = F32(dev, x, rows, classes);
            using var y = Tensor.FromArray<int>(valid, new Shape(rows), dev);
            using var loss = F.CrossEntropy(t, y, ignore);
            AssertClose([total / counted], Values(loss), 2e-6, 1e-5, $"CrossEntropy ignore {ignore}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void LayerNorm(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 7, cols = 33;
        const double eps = 1e-5;
        // An offset mean (as real activations have) stresses the variance computation.
        var x = Uniform(13, rows * cols, 2, 5);
        var gamma = Uniform(14, cols, 0.5, 1.5);
        var beta = Uniform(15, cols);
        var (plain, _) = Normalized(x, rows, cols, eps);
        var affine = plain.Select((v, i) => v * gamma[i % cols] + beta[i % cols]).ToArray();
        using var t = F32(dev, x, rows, cols);
        using var g = F32(dev, gamma, cols);
        using var b = F32(dev, beta, cols);
        using var y0 = F.LayerNorm(t, null, null, eps);
        using var y1 = F.LayerNorm(t, g, b, eps);
        AssertClose(plain, Values(y0), 1e-5, 1e-5, "LayerNorm");
        AssertClose(affine, Values(y1), 1e-5, 1e-5, "LayerNorm affine");
    }

    /// <summary>LayerNorm's F32 gradients over more rows than the CPU's 16 row ranges of the parameter sums (uneven
    /// ranges) against float64: dx, dγ = Σ_rows dy·x̂ and dβ = Σ_rows dy.</summary>
    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void LayerNormGradients(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 111, cols = 40;
        const double eps = 1e-5;
        var x = Uniform(16, rows * cols, 2, 5);
        var gamma = Uniform(17, cols, 0.5, 1.5);
        var dy = Uniform(18, rows * cols);
        double[] dx = new double[x.Length], dgamma = new double[cols], dbeta = new double[cols];
        var (normalized, rstds) = Normalized(x, rows, cols, eps);
        for (var r = 0; r < rows; r++)
        {
            var xhat = normalized.AsSpan(r * cols, cols);
            var rstd = rstds[r];
            var dxhat = Enumerable.Range(0, cols).Select(c => dy[r * cols + c] * gamma[c]).ToArray();
            double meanD = dxhat.Average(), meanDx = 0;
            for (var c = 0; c < cols; c++)
                meanDx += dxhat[c] * xhat[c] / cols;
            for (var c = 0; c < cols; c++)
            {
                dx[r * cols + c] = rstd * (dxhat[c] - meanD - xhat[c] * meanDx);
                dgamma[c] += dy[r * cols + c] * xhat[c];
                dbeta[c] += dy[r * cols + c];
            }
        }
        var t = F32(dev, x, rows, cols);
        var g = F32(dev, gamma, cols);
        var b = F32(dev, Uniform(19, cols), cols);
        t.RequiresGrad = g.RequiresGrad = b.RequiresGrad = true;
        var y = F.LayerNorm(t, g, b, eps);
        y.Backward(F32(dev, dy, rows, cols));
        AssertClose(dx, Values(t.Grad!), 1e-5, 1e-4, "LayerNorm dx");
        AssertClose(dgamma, Values(g.Grad!), 1e-4, 1e-5, "LayerNorm dgamma");
        AssertClose(dbeta, Values(b.Grad!), 1e-4, 1e-5, "LayerNorm dbeta");
    }

    /// <summary>Each row of <paramref name="x"/> [rows, cols] normalized in float64, (x − mean) · rstd, and each
    /// row's rstd = 1 / √(variance + eps): LayerNorm's reference.</summary>
    private static (double[] Normalized, double[] Rstd) Normalized(double[] x, int rows, int cols, double eps)
    {
        var (y, rstd) = (new double[x.Length], new double[rows]);
        for (var r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * cols, cols).ToArray();
            var mean = row.Average();
            rstd[r] = 1 / Math.Sqrt(row.Sum(v => (v - mean) * (v - mean)) / cols + eps);
            for (var c = 0; c < cols; c++)
                y[r * cols + c] = (row[c] - mean) * rstd[r];
        }
        return (y, rstd);
    }

    // ---- convolution and pooling ----

    public static TheoryData<string, string> ConvCases()
    {
        string[] geometries =
        [
            // n c h w oc kh kw stride padding dilation
            "2 3 9 8 4 3 3 1 1 1",
            "1 2 11 7 3 3 3 2 0 1",
            "2 4 10 10 5 3 3 2 1 2",
            "3 2 6 9 2 2 4 1 2 1",
            "1 1 5 5 1 5 5 1 2 1",
            "1 2 4 4 2 3 3 3 3 2",      // padding wider than the reach of some kernel taps: empty ranges
            "3 6 104 104 4 5 5 1 2 1",  // 1.6M column values per image: CUDA splits the batch into chunks of 2 and 1
            "37 3 7 6 4 3 3 1 1 1",     // more images than the CPU's 16 groups: groups of 2 and 3 images, partial sums added in order
        ];
        return OnEveryDevice(geometries);
    }

    [Theory]
    [MemberData(nameof(ConvCases))]
    public void Conv2d_ForwardAndGradients(string device, string geometry)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        var gm = geometry.Split(' ').Select(int.Parse).ToArray();
        int n = gm[0], c = gm[1], h = gm[2], w = gm[3], oc = gm[4], kh = gm[5], kw = gm[6], stride = gm[7], pad = gm[8], dil = gm[9];
        int oh = (h + 2 * pad - dil * (kh - 1) - 1) / stride + 1, ow = (w + 2 * pad - dil * (kw - 1) - 1) / stride + 1;
        var x = Uniform(21, n * c * h * w);
        var wt = Uniform(22, oc * c * kh * kw);
        var bias = Uniform(23, oc);
        var dy = Uniform(24, n * oc * oh * ow);

        var y = new double[dy.Length];
        var yTol = new double[dy.Length];
        var dx = new double[x.Length];
        var dxAbs = new double[x.Length];
        var dw = new double[wt.Length];
        var dwAbs = new double[wt.Length];
        var db = new double[oc];
        var dbAbs = new double[oc];
        var taps = c * kh * kw;
        for (var b = 0; b < n; b++)
        {
            for (var o = 0; o < oc; o++)
            {
                for (var i = 0; i < oh; i++)
                {
                    for (var j = 0; j < ow; j++)
                    {
                        var yi = ((b * oc + o) * oh + i) * ow + j;
                        double s = bias[o], abs = Math.Abs(bias[o]);
                        for (var ch = 0; ch < c; ch++)
                        {
                            for (var p = 0; p < kh; p++)
                            {
                                for (var q = 0; q < kw; q++)
                                {
                                    int ih = i * stride - pad + p * dil, iw = j * stride - pad + q * dil;
                                    if (ih < 0 || ih >= h || iw < 0 || iw >= w)
                                        continue;
                                    var xi = ((b * c + ch) * h + ih) * w + iw;
                                    var wi = ((o * c + ch) * kh + p) * kw + q;
                                    s += x[xi] * wt[wi];
                                    abs += Math.Abs(x[xi] * wt[wi]);
                                    dx[xi] += dy[yi] * wt[wi];
                                    dxAbs[xi] += Math.Abs(dy[yi] * wt[wi]);
                                    dw[wi] += dy[yi] * x[xi];
                                    dwAbs[wi] += Math.Abs(dy[yi] * x[xi]);
                                }
                            }
                        }
                        y[yi] = s;
                        yTol[yi] = 2 * (taps + 2) * U * abs + 1e-30;
                        db[o] += dy[yi];
                        dbAbs[o] += Math.Abs(dy[yi]);
                    }
                }
            }
        }
        // dx sums over at most oc·kh·kw terms, dw and db over n·oh·ow.
        var dxTol = dxAbs.Select(a => 2 * (oc * kh * kw + 2) * U * a + 1e-30).ToArray();
        var dwTol = dwAbs.Select(a => 2 * (n * oh * ow + 2) * U * a + 1e-30).ToArray();
        var dbTol = dbAbs.Select(a => 2 * (n * oh * ow + 2) * U * a + 1e-30).ToArray();

        var tx = F32(dev, x, n, c, h, w);
        var tw = F32(dev, wt, oc, c, kh, kw);
        var tb = F32(dev, bias, oc);
        tx.RequiresGrad = tw.RequiresGrad = tb.RequiresGrad = true;
        using var ty = F.Conv2d(tx, tw, tb, stride, pad, dil);
        Assert.Equal([n, oc, oh, ow], ty.Shape.ToArray());
        AssertWithin(y, Values(ty), yTol, $"Conv2d {geometry}");
        ty.Backward(F32(dev, dy, n, oc, oh, ow));
        AssertWithin(dx, Values(tx.Grad!), dxTol, $"Conv2d dx {geometry}");
        AssertWithin(dw, Values(tw.Grad!), dwTol, $"Conv2d dw {geometry}");
        AssertWithin(db, Values(tb.Grad!), dbTol, $"Conv2d dbias {geometry}");
    }

    public static TheoryData<string, int, int, int> PoolCases()
    {
        var data = new TheoryData<string, int, int, int>();
        foreach (var dev in Devices)
        {
            foreach (var (k, s, p) in new[] { (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 1), (4, 3, 2) })
                data.Add(dev.Data, k, s, p);
        }
        return data;
    }

    /// <summary>NaNs in max pooling, PyTorch's rule: a NaN replaces the best so far, so the output is NaN and the
    /// gradient goes to the window's last NaN in row-major order.</summary>
    [Theory]
    [MemberData(nameof(PoolCases))]
    public void MaxPooling_NaNsPropagateAndTheLastNaNTakesTheGradient(string device, int kernel, int stride, int pad)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int n = 2, c = 2, h = 9, w = 8;
        int oh = (h + 2 * pad - kernel) / stride + 1, ow = (w + 2 * pad - kernel) / stride + 1;
        var u = Uniform(41, n * c * h * w, 0, 1);
        var x = Uniform(42, n * c * h * w, -4, 4).Select((v, i) => u[i] < 0.15 ? double.NaN : Math.Round(v)).ToArray();
        var dy = Uniform(43, n * c * oh * ow);
        var y = new double[dy.Length];
        var dx = new double[x.Length];
        for (var pl = 0; pl < n * c; pl++)
        {
            for (var i = 0; i < oh; i++)
            {
                for (var j = 0; j < ow; j++)
                {
                    var o = (pl * oh + i) * ow + j;
                    var at = -1;
                    for (var p = 0; p < kernel; p++)
                    {
                        for (var q = 0; q < kernel; q++)
                        {
                            int ih = i * stride - pad + p, iw = j * stride - pad + q;
                            if (ih < 0 || ih >= h || iw < 0 || iw >= w)
                                continue;
                            var xi = (pl * h + ih) * w + iw;
                            if (at < 0 || x[xi] > x[at] || double.IsNaN(x[xi]))
                                at = xi;
                        }
                    }
                    y[o] = x[at];
                    dx[at] += dy[o];
                }
            }
        }
        Assert.Contains(y, double.IsNaN);
        var tx = F32(dev, x, n, c, h, w);
        tx.RequiresGrad = true;
        using var mp = F.MaxPool2d(tx, kernel, stride, pad);
        Assert.Equal(y, Values(mp));
        mp.Backward(F32(dev, dy, n, c, oh, ow));
        AssertClose(dx, Values(tx.Grad!), 1e-6, 1e-6, "MaxPool2d dx with NaNs");
    }

    [Theory]
    [MemberData(nameof(PoolCases))]
    public void Pooling_ForwardAndGradients(string device, int kernel, int stride, int pad)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int n = 2, c = 3, h = 9, w = 8;
        int oh = (h + 2 * pad - kernel) / stride + 1, ow = (w + 2 * pad - kernel) / stride + 1;
        // Rounded values: ties inside windows, where the first (row-major) maximum takes the gradient.
        var x = Uniform(31, n * c * h * w, -4, 4).Select(v => Math.Round(v)).ToArray();
        var dy = Uniform(32, n * c * oh * ow);
        var maxY = new double[dy.Length];
        var avgY = new double[dy.Length];
        var maxDx = new double[x.Length];
        var avgDx = new double[x.Length];
        for (var pl = 0; pl < n * c; pl++)
        {
            for (var i = 0; i < oh; i++)
            {
                for (var j = 0; j < ow; j++)
                {
                    var o = (pl * oh + i) * ow + j;
                    double best = double.NegativeInfinity, sum = 0;
                    var at = -1;
                    for (var p = 0; p < kernel; p++)
                    {
                        for (var q = 0; q < kernel; q++)
                        {
                            int ih = i * stride - pad + p, iw = j * stride - pad + q;
                            if (ih < 0 || ih >= h || iw < 0 || iw >= w)
                                continue;
                            var xi = (pl * h + ih) * w + iw;
                            sum += x[xi];
                            avgDx[xi] += dy[o] / (kernel * kernel);
                            if (x[xi] > best)
                            {
                                best = x[xi];
                                at = xi;
                            }
                        }
                    }
                    maxY[o] = best;
                    maxDx[at] += dy[o];
                    avgY[o] = sum / (kernel * kernel);   // padding counts in the divisor
                }
            }
        }
        var tx = F32(dev, x, n, c, h, w);
        tx.RequiresGrad = true;
        using (var mp = F.MaxPool2d(tx, kernel, stride, pad))
        {
            Assert.Equal(maxY, Values(mp));
            mp.Backward(F32(dev, dy, n, c, oh, ow));
        }
        AssertClose(maxDx, Values(tx.Grad!), 1e-6, 1e-6, "MaxPool2d dx");
        tx.Grad = null;
        using (var ap = F.AvgPool2d(tx, kernel, stride, pad))
        {
            AssertClose(avgY, Values(ap), 1e-6, 1e-6, "AvgPool2d");
            ap.Backward(F32(dev, dy, n, c, oh, ow));
        }
        AssertClose(avgDx, Values(tx.Grad!), 1e-6, 1e-6, "AvgPool2d dx");
    }

    // ---- indexing ----

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void IndexSelect_And_IndexAdd(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        int[] shape = [4, 6, 3];
        int[] index = [5, 0, 5, 2, 2, 5, 1];
        var x = Uniform(41, Numel(shape));
        using var tx = F32(dev, x, shape);
        for (var axis = 0; axis < 3; axis++)
        {
            var idx = index.Where(i => i < shape[axis]).ToArray();
            using var tIdx = Tensor.FromArray<int>(idx, new Shape(idx.Length), dev);
            var ys = (int[])shape.Clone();
            ys[axis] = idx.Length;
            var expected = new double[Numel(ys)];
            for (var o = 0; o < expected.Length; o++)
            {
                var oi = Unravel(o, ys);
                oi[axis] = idx[oi[axis]];
                expected[o] = x[Ravel(oi, shape)];
            }
            using var y = F.IndexSelect(tx, axis, tIdx);
            Assert.Equal(expected, Values(y));

            // index-add: dst[.., idx[i], ..] += src[.., i, ..], repeated indices accumulate.
            var src = Uniform(42 + axis, expected.Length);
            var dst = Uniform(45 + axis, x.Length);
            var want = (double[])dst.Clone();
            for (var o = 0; o < src.Length; o++)
            {
                var oi = Unravel(o, ys);
                oi[axis] = idx[oi[axis]];
                want[Ravel(oi, shape)] += src[o];
            }
            using var ts = F32(dev, src, ys);
            using var td = F32(dev, dst, shape);
            dev.Backend.IndexAdd(ts.View, axis, tIdx.View, td.View);
            // Repeated indices sum a few terms of size ≤ 2 in float: the error scales with the terms, not the sum.
            AssertClose(want, Values(td), 8 * U, 4 * U, $"IndexAdd axis {axis}");
        }

        // Embedding is a lookup of axis 0 with indices of any shape.
        var table = Uniform(46, 6 * 4);
        using var tt = F32(dev, table, 6, 4);
        using var ids = Tensor.FromArray<int>([5, 0, 5, 2, 1, 1], new Shape(2, 3), dev);
        using var e = F.Embedding(ids, tt);
        Assert.Equal([2, 3, 4], e.Shape.ToArray());
        Assert.Equal(new[] { 5, 0, 5, 2, 1, 1 }.SelectMany(r => table.Skip(r * 4).Take(4)), Values(e));
    }

    // ---- randomness ----

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Dropout_Mask(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int n = 100_000;
        const double p = 0.3;
        const ulong seed = 2024;
        var x = Uniform(51, n, 0.5, 2);   // never 0, so the mask reads off y
        using var tx = F32(dev, x, n);

        Rng.ManualSeed(seed);
        using var y1 = F.Dropout(tx, p, training: true);
        using var y2 = F.Dropout(tx, p, training: true);   // the stream moved on by n
        Rng.ManualSeed(seed);
        using var y3 = F.Dropout(tx, p, training: true);   // same seed, same mask

        var v1 = Values(y1);
        var v2 = Values(y2);
        Assert.Equal(v1, Values(y3));
        var kept = 0;
        var differs = 0;
        for (var i = 0; i < n; i++)
        {
            var keep = Philox.Uniform(seed, (ulong)i) >= p;
            var keep2 = Philox.Uniform(seed, (ulong)(n + i)) >= p;
            kept += keep ? 1 : 0;
            differs += keep != keep2 ? 1 : 0;
            Assert.Equal(keep ? (double)(float)(x[i] * (float)(1 / (1 - p))) : 0, v1[i], 1e-6 * Math.Abs(x[i]) * 2);
            Assert.Equal(keep2, v2[i] != 0);
        }
        var sigma = Math.Sqrt(p * (1 - p) / n);
        Assert.InRange(kept / (double)n, 1 - p - 4 * sigma, 1 - p + 4 * sigma);
        Assert.True(differs > n / 10, "the second draw must use new counters");

        // The kernel directly, at an arbitrary counter offset.
        using var yk = Tensor.Empty(new Shape(n), DType.F32, dev);
        using var mk = Tensor.Empty(new Shape(n), DType.U8, dev);
        dev.Backend.Dropout(tx.View, 0.5, 99, 123_456_789, yk.View, mk.View);
        var mask = mk.ToArray<byte>();
        for (var i = 0; i < n; i++)
            Assert.Equal(Philox.Uniform(99, 123_456_789 + (ulong)i) >= 0.5 ? 1 : 0, mask[i]);
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Random_Distributions(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int n = 100_000;
        foreach (var dtype in new[] { DType.F32, DType.F64 })
        {
            using var normal = Tensor.Normal(new Shape(n), 2.0, 3.0, 17, dtype, dev);
            var v = Values(normal);
            var mean = v.Average();
            var std = Math.Sqrt(v.Sum(a => (a - mean) * (a - mean)) / (n - 1));
            // Standard errors: σ/√n for the mean, ≈ σ/√(2n) for the standard deviation; allow 5 of each.
            Assert.InRange(mean, 2.0 - 5 * 3.0 / Math.Sqrt(n), 2.0 + 5 * 3.0 / Math.Sqrt(n));
            Assert.InRange(std, 3.0 - 5 * 3.0 / Math.Sqrt(2.0 * n), 3.0 + 5 * 3.0 / Math.Sqrt(2.0 * n));
            var within1 = v.Count(a => Math.Abs(a - 2) < 3) / (double)n;
            Assert.InRange(within1, 0.6827 - 0.01, 0.6827 + 0.01);

            using var uniform = Tensor.Uniform(new Shape(n), -2, 5, 18, dtype, dev);
            var u = Values(uniform);
            // [low, high): f32 rounding of low + (high - low)·u may reach high itself, f64 may not.
            Assert.All(u, a => Assert.InRange(a, -2, dtype == DType.F32 ? 5 : 5 - 1e-12));
            Assert.InRange(u.Average(), 1.5 - 5 * 7 / Math.Sqrt(12.0 * n), 1.5 + 5 * 7 / Math.Sqrt(12.0 * n));
            for (var i = 0; i < 1000; i++)
            {
                var expected = -2 + 7 * (double)Philox.Uniform(18, (ulong)i);
                Assert.Equal(dtype == DType.F32 ? (float)expected : expected, u[i]);
            }
        }
        // Different seeds give different streams.
        using var a1 = Tensor.Normal(new Shape(64), 0, 1, 1, DType.F32, dev);
        using var a2 = Tensor.Normal(new Shape(64), 0, 1, 2, DType.F32, dev);
        Assert.NotEqual(Values(a1), Values(a2));
    }

    // ---- optimizer kernels ----

    public static TheoryData<string, double, double, double, bool> SgdCases()
    {
        var data = new TheoryData<string, double, double, double, bool>();
        foreach (var dev in Devices)
        {
            data.Add(dev.Data, 0.0, 0.0, 0.0, false);     // plain
            data.Add(dev.Data, 0.9, 0.0, 0.0, false);     // momentum
            data.Add(dev.Data, 0.9, 0.1, 0.0, false);     // dampening
            data.Add(dev.Data, 0.9, 0.0, 0.0, true);      // nesterov
            data.Add(dev.Data, 0.8, 0.0, 1e-2, true);     // nesterov + weight decay
            data.Add(dev.Data, 0.0, 0.0, 5e-2, false);    // weight decay only
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(SgdCases))]
    public void SgdStep(string device, double momentum, double dampening, double weightDecay, bool nesterov)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int n = 1000, steps = 6;
        const double lr = 0.05;
        var p = Uniform(61, n, -2, 2);
        var buf = new double[n];
        using var tp = F32(dev, p, n);
        using var tm = Tensor.Zeros(new Shape(n), DType.F32, dev);
        for (var step = 1; step <= steps; step++)
        {
            var g = Uniform(100 + step, n, -1, 1);
            // PyTorch's SGD: d = g + wd·p; b = d (first step) or μ·b + (1-τ)·d; d = nesterov ? d + μ·b : b; p -= lr·d.
            for (var i = 0; i < n; i++)
            {
                var d = g[i] + weightDecay * p[i];
                if (momentum != 0)
                {
                    buf[i] = step == 1 ? d : momentum * buf[i] + (1 - dampening) * d;
                    d = nesterov ? d + momentum * buf[i] : buf[i];
                }
                p[i] -= lr * d;
            }
            using var tg = F32(dev, g, n);
            dev.Backend.SgdStep(tp.View, tg.View, tm.View, new SgdArgs(lr, momentum, dampening, weightDecay, nesterov, step == 1));
            AssertClose(p, Values(tp), 1e-6, 1e-5, $"SGD step {step}");
            if (momentum != 0)
                AssertClose(buf, Values(tm), 1e-6, 1e-5, $"SGD momentum buffer step {step}");
        }
    }

    public static TheoryData<string, double, bool> AdamCases()
    {
        var data = new TheoryData<string, double, bool>();
        foreach (var dev in Devices)
        {
            data.Add(dev.Data, 0.0, false);     // Adam
            data.Add(dev.Data, 1e-2, false);    // Adam with L2 weight decay
            data.Add(dev.Data, 1e-2, true);     // AdamW (decoupled)
            data.Add(dev.Data, 0.1, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(AdamCases))]
    public void AdamStep(string device, double weightDecay, bool decoupled)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        // Above the CPU's parallel threshold and no multiple of a vector: every block of the loop ends in a tail.
        const int n = 40_003, steps = 6;
        const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8;
        // The kernel sees float inputs: the reference starts from the same float-rounded values.
        var p = Uniform(71, n, -2, 2).Select(x => (double)(float)x).ToArray();
        var m = new double[n];
        var v = new double[n];
        using var tp = F32(dev, p, n);
        using var tm = Tensor.Zeros(new Shape(n), DType.F32, dev);
        using var tv = Tensor.Zeros(new Shape(n), DType.F32, dev);
        for (var step = 1; step <= steps; step++)
        {
            // Gradients of varying scale, including tiny ones where eps matters.
            var g = Uniform(200 + step, n, -1, 1).Select((x, i) => (double)(float)(i % 7 == 0 ? x * 1e-6 : x)).ToArray();
            // PyTorch's Adam/AdamW: AdamW p *= 1 - lr·wd, Adam g += wd·p; m, v moments;
            // p -= lr/(1-β1^t) · m / (√v / √(1-β2^t) + eps).
            for (var i = 0; i < n; i++)
            {
                var gi = g[i];
                if (decoupled)
                    p[i] *= 1 - lr * weightDecay;
                else
                    gi += weightDecay * p[i];
                m[i] = b1 * m[i] + (1 - b1) * gi;
                v[i] = b2 * v[i] + (1 - b2) * gi * gi;
                var bc1 = 1 - Math.Pow(b1, step);
                var bc2 = 1 - Math.Pow(b2, step);
                p[i] -= lr / bc1 * m[i] / (Math.Sqrt(v[i]) / Math.Sqrt(bc2) + eps);
            }
            using var tg = F32(dev, g, n);
            dev.Backend.AdamStep(tp.View, tg.View, tm.View, tv.View, new AdamArgs(lr, b1, b2, eps, weightDecay, decoupled, step));
            AssertClose(p, Values(tp), 1e-6, 1e-5, $"Adam step {step}");
            // m sums terms of either sign of size ≤ 1: its float error scales with the terms (atol), not with m.
            AssertClose(m, Values(tm), 4 * U, 1e-5, $"Adam m step {step}");
            AssertClose(v, Values(tv), 1e-12, 1e-5, $"Adam v step {step}");
        }
    }

    public static TheoryData<string, bool> Adam8BitCases() => OnEveryDevice(false, true);

    /// <summary>The fused 8-bit Adam step against the same step composed of tensor ops on the CPU (reading the codes,
    /// Adam on the first n values, quantizing back, padding of the last block included), three steps from random
    /// codes: bit for bit on the CPU; on CUDA (whose compiler may fuse multiply-adds) within a rounding of the
    /// parameters and one code step of the moments.</summary>
    [Theory]
    [MemberData(nameof(Adam8BitCases))]
    public void Adam8BitStep_MatchesTheComposedStep(string device, bool decoupled)
    {
        var dev = DeviceFor(device);
        var cpu = DeviceFor("cpu");
        using var scope = TensorScope.Begin();
        const int blocks = 3, n = 2 * Adam.StateBlock + 777, size = blocks * Adam.StateBlock;
        var p0 = Uniform(81, n, -1, 1);
        var mc0 = Uniform(82, size, -127, 127).Select(v => (double)(sbyte)Math.Round(v)).ToArray();
        var rc0 = Uniform(83, size, 0, 255).Select(v => (double)(byte)Math.Round(v)).ToArray();
        var ms0 = Uniform(84, blocks, 0.01, 0.1);
        var rs0 = Uniform(85, blocks, 0.01, 0.2);
        Tensor Codes(Device d, double[] v, DType t) => t == DType.I8
            ? Tensor.FromArray(v.Select(c => (sbyte)c).ToArray(), new Shape(blocks, Adam.StateBlock), d)
            : Tensor.FromArray(v.Select(c => (byte)c).ToArray(), new Shape(blocks, Adam.StateBlock), d);
        var (p, mc, ms, rc, rs) = (F32(dev, p0, n), Codes(dev, mc0, DType.I8), F32(dev, ms0, blocks, 1), Codes(dev, rc0, DType.U8), F32(dev, rs0, blocks, 1));
        var (rp, rmc, rms, rrc, rrs) = (F32(cpu, p0, n), Codes(cpu, mc0, DType.I8), F32(cpu, ms0, blocks, 1), Codes(cpu, rc0, DType.U8), F32(cpu, rs0, blocks, 1));
        for (var step = 1; step <= 3; step++)
        {
            var g = Uniform(90 + step, n, -1, 1).Select((x, i) => i % 5 == 0 ? x * 1e-4 : x).ToArray();
            var args = new AdamArgs(1e-2, 0.9, 0.999, 1e-8, 0.01, decoupled, step);
            dev.Backend.Adam8BitStep(p.View, F32(dev, g, n).View, mc.View, ms.View, rc.View, rs.View, args);
            // The composed step, as the optimizer ran it before the fused kernel.
            static Tensor Read(Tensor codes, Tensor absmax, double levels, double floor)
            {
                var raw = codes.To(DType.F32);
                var values = floor > 0 ? F.Maximum(raw, Tensor.Full(new Shape(), floor, DType.F32, codes.Device)) : raw;
                return values * absmax.Mul(1 / levels);
            }
            static void Write(Tensor x, Tensor codes, Tensor absmax, double levels)
            {
                var max = F.Max(x.Abs(), [1], keepDim: true);
                var safe = F.Maximum(max, Tensor.Full(new Shape(), 1e-30, DType.F32, x.Device));
                F.CopyInto(codes, (x * (Tensor.Full(new Shape(), levels, DType.F32, x.Device) / safe)).To(codes.DType));
                F.CopyInto(absmax, max);
            }
            var m = Read(rmc, rms, 127, 0);
            var r = Read(rrc, rrs, 255, 0.5);
            var v = r * r * (r * r);
            cpu.Backend.AdamStep(rp.View, F32(cpu, g, n).View, m.Reshape(-1).Narrow(0, 0, n).View, v.Reshape(-1).Narrow(0, 0, n).View, args);
            Write(m, rmc, rms, 127);
            Write(v.Sqrt().Sqrt(), rrc, rrs, 255);
        }
        if (device == "cpu")
        {
            Assert.Equal(Values(rp), Values(p));
            Assert.Equal(rmc.ToArray<sbyte>(), mc.ToArray<sbyte>());
            Assert.Equal(rrc.ToArray<byte>(), rc.ToArray<byte>());
            Assert.Equal(Values(rms), Values(ms));
            Assert.Equal(Values(rrs), Values(rs));
            return;
        }
        AssertClose(Values(rp), Values(p), 1e-6, 1e-5, "8-bit Adam parameters");
        AssertClose(Values(rms), Values(ms), 1e-7, 1e-4, "8-bit Adam m absmax");
        AssertClose(Values(rrs), Values(rs), 1e-7, 1e-4, "8-bit Adam v^¼ absmax");
        var codeGap = rmc.ToArray<sbyte>().Zip(mc.ToArray<sbyte>(), (a, b) => Math.Abs(a - b)).Max();
        var rootGap = rrc.ToArray<byte>().Zip(rc.ToArray<byte>(), (a, b) => Math.Abs(a - b)).Max();
        Assert.True(codeGap <= 1 && rootGap <= 1, $"codes differ by up to {codeGap} (m) and {rootGap} (v^¼)");
    }

    // ---- casts ----

    private static readonly DType[] AllTypes = [DType.F32, DType.F64, DType.F16, DType.BF16, DType.I8, DType.U8, DType.I32];

    /// <summary>Round to nearest even with <paramref name="bits"/> significant bits and exponent floor
    /// <paramref name="minExp"/> (subnormals below it).</summary>
    private static double RoundSignificand(double v, int bits, int minExp)
    {
        if (v == 0 || double.IsNaN(v) || double.IsInfinity(v))
            return v;
        var e = Math.Max(Math.ILogB(v), minExp);
        var ulp = Math.ScaleB(1.0, e - (bits - 1));
        return Math.Round(v / ulp, MidpointRounding.ToEven) * ulp;
    }

    /// <summary>The value a float64 becomes in <paramref name="t"/>: floats round to nearest even (F16 overflows to
    /// ±inf from 65520, the midpoint above its largest finite 65504), integers round half to even and clamp.</summary>
    private static double RefCast(DType t, double v) => t switch
    {
        DType.F64 => v,
        DType.F32 => (float)v,
        DType.F16 => Math.Abs(v) >= 65520 ? Math.CopySign(double.PositiveInfinity, v) : RoundSignificand(v, 11, -14),
        DType.BF16 => RoundSignificand(v, 8, -126),
        DType.I8 => Math.Clamp(Math.Round(v), -128, 127),
        DType.U8 => Math.Clamp(Math.Round(v), 0, 255),
        DType.I32 => Math.Clamp(Math.Round(v), int.MinValue, int.MaxValue),
        _ => throw new ArgumentException(t.ToString()),
    };

    /// <summary>A tensor of dtype <paramref name="t"/> holding exactly <paramref name="v"/> (each representable), built without Cast.</summary>
    private static Tensor Raw(Device d, DType t, double[] v) => t switch
    {
        DType.F64 => Tensor.FromArray<double>(v, new Shape(v.Length), d),
        DType.F32 => Tensor.FromArray<float>(v.Select(a => (float)a).ToArray(), new Shape(v.Length), d),
        DType.F16 => Tensor.FromArray<Half>(v.Select(a => (Half)a).ToArray(), new Shape(v.Length), d),
        DType.BF16 => Tensor.FromArray<BFloat16>(v.Select(a => (BFloat16)(float)a).ToArray(), new Shape(v.Length), d),
        DType.I8 => Tensor.FromArray<sbyte>(v.Select(a => (sbyte)a).ToArray(), new Shape(v.Length), d),
        DType.U8 => Tensor.FromArray<byte>(v.Select(a => (byte)a).ToArray(), new Shape(v.Length), d),
        DType.I32 => Tensor.FromArray<int>(v.Select(a => (int)a).ToArray(), new Shape(v.Length), d),
        _ => throw new ArgumentException(t.ToString()),
    };

    /// <summary>Elements of any dtype as doubles, read without Cast.</summary>
    private static double[] ReadRaw(Tensor t) => t.DType switch
    {
        DType.F64 => t.ToArray<double>(),
        DType.F32 => [.. t.ToArray<float>().Select(a => (double)a)],
        DType.F16 => [.. t.ToArray<Half>().Select(a => (double)a)],
        DType.BF16 => [.. t.ToArray<BFloat16>().Select(a => (double)(float)a)],
        DType.I8 => [.. t.ToArray<sbyte>().Select(a => (double)a)],
        DType.U8 => [.. t.ToArray<byte>().Select(a => (double)a)],
        DType.I32 => [.. t.ToArray<int>().Select(a => (double)a)],
        _ => throw new ArgumentException(t.ToString()),
    };

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Cast_AllPairs(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        // f32-representable values covering halves (ties), integer range edges, F16/BF16 rounding, F16 overflow
        // and subnormals. NaN and ±inf are checked between float types only (an integer has no NaN).
        double[] finite =
        [
            0, -0.0, 1, -1, 0.5, 1.5, 2.5, -2.5, 3.49, 126.5, 127.5, 128, -128.5, -129, 254.5, 255.5, 256, 300, -300,
            1e-3, 3.14159265, -2.718281828, 1000.06, 2049, 4097, 65504, 65519, 65520, 1e5, -1e5, 6e-8, 1e-7, 3e-5, 1e-30,
            1.00390625, 1.01171875, 257, 33_554_435, 3e9, -3e9,
        ];
        var values = finite.Select(v => (double)(float)v).ToArray();
        double[] special = [double.NaN, double.PositiveInfinity, double.NegativeInfinity];
        var floatValues = values.Concat(special).ToArray();

        foreach (var src in AllTypes)
        {
            foreach (var dst in AllTypes)
            {
                var input = src.IsFloat() && dst.IsFloat() ? floatValues : values;
                var srcValues = input.Select(v => RefCast(src, v)).ToArray();
                var expected = srcValues.Select(v => RefCast(dst, v)).ToArray();
                using var ts = Raw(dev, src, srcValues);
                Assert.Equal(srcValues, ReadRaw(ts));
                using var td = ts.To(dst);
                Assert.Equal(dst, td.DType);
                var actual = ReadRaw(td);
                for (var i = 0; i < expected.Length; i++)
                {
                    var ok = double.IsNaN(expected[i]) ? double.IsNaN(actual[i]) : expected[i] == actual[i];
                    Assert.True(ok, $"cast {src.Name()} -> {dst.Name()} of {srcValues[i]:R}: got {actual[i]:R}, expected {expected[i]:R}");
                }
            }
        }
    }

    /// <summary>F32 to 8-bit codes over long runs (the CPU converts 32 at a time in vectors): halves round to even,
    /// out-of-range values and infinities saturate, in every position of a vector.</summary>
    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Cast_LongRunsToEightBitCodes(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        double[] specials = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.5, 126.5, -128.5, -127.5, 254.5, 255.5, 300, -300, 1e30, -1e30, double.PositiveInfinity, double.NegativeInfinity];
        var x = Uniform(61, 1037, -300, 300).Select((v, i) => i % 3 == 0 ? specials[i / 3 % specials.Length] : Math.Round(v * 2) / 2)
            .Select(v => (double)(float)v).ToArray();
        using var t = F32(dev, x, x.Length);
        foreach (var dst in new[] { DType.I8, DType.U8 })
        {
            using var codes = t.To(dst);
            var actual = ReadRaw(codes);
            for (var i = 0; i < x.Length; i++)
                Assert.True(RefCast(dst, x[i]) == actual[i], $"cast f32 -> {dst.Name()} of {x[i]:R} at {i}: got {actual[i]}, expected {RefCast(dst, x[i])}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Cast_RoundTrips(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        // Every I8 and U8 value survives a trip through each wider type and back.
        var i8 = Enumerable.Range(-128, 256).Select(v => (double)v).ToArray();
        var u8 = Enumerable.Range(0, 256).Select(v => (double)v).ToArray();
        foreach (var (type, all) in new[] { (DType.I8, i8), (DType.U8, u8) })
        {
            foreach (var via in new[] { DType.F32, DType.F64, DType.F16, DType.I32 })
            {
                using var t = Raw(dev, type, all);
                using var wide = t.To(via);
                using var back = wide.To(type);
                Assert.Equal(all, ReadRaw(back));
            }
        }
        // F32 -> F16/BF16 -> F32 is the rounding of the narrow type; a second trip changes nothing.
        var x = Uniform(81, 4096, -70000, 70000).Concat(Uniform(82, 4096, -1e-3, 1e-3)).ToArray();
        foreach (var narrow in new[] { DType.F16, DType.BF16 })
        {
            using var t = F32(dev, x, x.Length);
            using var n1 = t.To(narrow);
            using var f1 = n1.To(DType.F32);
            using var n2 = f1.To(narrow);
            using var f2 = n2.To(DType.F32);
            var expected = x.Select(v => RefCast(narrow, v)).ToArray();
            Assert.Equal(expected, Values(f1));
            Assert.Equal(expected, Values(f2));
        }
        // Wide integers: I32 -> F64 -> I32 is exact, I32 -> F32 rounds to 24 bits.
        double[] ints = [int.MaxValue, int.MinValue, 16_777_217, -16_777_219, 123_456_789];
        using (var ti = Raw(dev, DType.I32, ints))
        using (var d = ti.To(DType.F64))
        using (var back = d.To(DType.I32))
        using (var f = ti.To(DType.F32))
        {
            Assert.Equal(ints, ReadRaw(back));
            Assert.Equal(ints.Select(v => (double)(float)v), ReadRaw(f));
        }
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void Fill_And_StridedCopy_EveryDType(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        foreach (var t in AllTypes)
        {
            // Fill rounds and saturates as a cast does; into a strided (transposed, narrowed) view only.
            using var base0 = Raw(dev, t, new double[12]);
            using var grid = base0.Reshape(3, 4);
            using var view = grid.Transpose(0, 1).Narrow(0, 1, 2);   // [2, 3]: columns 1 and 2
            dev.Backend.Fill(view.View, 300.7);
            var filled = RefCast(t, 300.7);
            var expected = Enumerable.Range(0, 12).Select(i => i % 4 is 1 or 2 ? filled : 0.0).ToArray();
            Assert.Equal(expected, ReadRaw(base0));

            // Copy between two strided views of the same dtype.
            var values = Enumerable.Range(0, 12).Select(i => RefCast(t, i * 3 - 7)).ToArray();
            using var src = Raw(dev, t, values);
            using var srcGrid = src.Reshape(3, 4);
            using var transposed = srcGrid.Transpose(0, 1);             // [4, 3]
            using var copy = transposed.Contiguous();
            var want = Enumerable.Range(0, 12).Select(i => values[i % 3 * 4 + i / 3]).ToArray();
            Assert.Equal(want, ReadRaw(copy));
        }
    }

    [Theory]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void Gemm_16Bit_WithF32Accumulation_OnCuda(DType dtype)
    {
        var gpu = DeviceFor("cuda:0");
        using var scope = TensorScope.Begin();
        const int m = 33, n = 65, k = 130;
        var a = Uniform(81, m * k, -1, 1).Select(v => RefCast(dtype, v)).ToArray();
        var b = Uniform(82, k * n, -1, 1).Select(v => RefCast(dtype, v)).ToArray();
        var expected = new double[m * n];
        for (var i = 0; i < m; i++)
            for (var j = 0; j < n; j++)
            {
                double sum = 0;
                for (var p = 0; p < k; p++)
                    sum += a[i * k + p] * b[p * n + j];
                expected[i * n + j] = sum;
            }
        using var ta = Raw(gpu, dtype, a);
        using var tb = Raw(gpu, dtype, b);
        using var tc = Raw(gpu, dtype, new double[m * n]);
        gpu.Backend.Gemm(new GemmArgs(false, false, 1, m, n, k, 1, k, 0, n, 0, 0, n, 0), dtype, ta.View.Data, tb.View.Data, tc.View.Data);
        // Products are exact in F32 and sums accumulate in F32; the result is rounded once to the 16-bit type.
        var unit = dtype == DType.F16 ? 1.0 / (1 << 11) : 1.0 / (1 << 8);
        AssertClose(expected, ReadRaw(tc), 1e-3, unit, $"{dtype} GEMM");
    }
}
