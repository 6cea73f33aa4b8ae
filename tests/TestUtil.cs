
namespace Frugal.Tests;

/// <summary>Shared helpers of the numerical suites: seeded random data, the devices to run on, and a float64
/// finite-difference gradient checker.</summary>
internal static class TestUtil
{
    /// <summary>The unary ops that are tensor methods, by name, shared by the conformance and gradient tests.</summary>
    public static readonly IReadOnlyDictionary<string, Func<Tensor, Tensor>> UnaryMethods = new Dictionary<string, Func<Tensor, Tensor>>
    {
        ["Neg"] = t => t.Neg(),
        ["Exp"] = t => t.Exp(),
        ["Log"] = t => t.Log(),
        ["Tanh"] = t => t.Tanh(),
        ["Sigmoid"] = t => t.Sigmoid(),
        ["Relu"] = t => t.Relu(),
        ["Gelu"] = t => t.Gelu(),
        ["Sqrt"] = t => t.Sqrt(),
        ["Abs"] = t => t.Abs(),
    };

    // ---- the checkout ----

    /// <summary>The repository root (the folder with Engine.sln above the test binaries); skips the test when this
    /// run is from a published build (the GPU bundle), not a checkout.</summary>
    public static string CheckoutRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Engine.sln")))
                return dir.FullName;
        }
        Assert.Skip($"no Engine.sln above {AppContext.BaseDirectory}: this run is from a published build (the GPU bundle), not a checkout");
        return null;
    }

    // ---- devices ----

    /// <summary>The devices every conformance test runs on, as theory data: "cpu" and "cuda:0". Without a GPU the
    /// CUDA cases are reported skipped, with the driver's reason (see <see cref="DeviceFor"/>).</summary>
    public static TheoryData<string> Devices => new() { "cpu", "cuda:0" };

    /// <summary>The device named <paramref name="name"/> (as listed by <see cref="Devices"/>).</summary>
    public static Device DeviceFor(string name)
    {
        if (name == "cpu")
            return Device.Cpu;
        if (name == "cuda:0")
        {
            if (!Device.IsCudaAvailable)
                Assert.Skip(Device.CudaStatus.ToString());
            return Device.Cuda(0);
        }
        throw new ArgumentException($"no device named {name}");
    }

    // ---- random data ----

    /// <summary>n values uniform in [low, high), rounded to float so F32 and F64 runs see the same inputs.</summary>
    public static double[] Uniform(int seed, int n, double low = -1, double high = 1)
    {
        var rng = new Random(seed);
        var v = new double[n];
        for (var i = 0; i < n; i++)
            v[i] = (float)(low + (high - low) * rng.NextDouble());
        return v;
    }

    /// <summary>Uniform values whose magnitude is at least <paramref name="margin"/>: inputs away from the kink of
    /// relu/abs at 0, so finite differences never straddle it.</summary>
    public static double[] AwayFromZero(int seed, int n, double margin = 0.05, double high = 1)
    {
        var rng = new Random(seed);
        var v = new double[n];
        for (var i = 0; i < n; i++)
            v[i] = (float)((margin + (high - margin) * rng.NextDouble()) * (rng.Next(2) == 0 ? -1 : 1));
        return v;
    }

    /// <summary>n values on the grid k·<paramref name="spacing"/> + <paramref name="phase"/> (k random, distinct when
    /// possible): two arrays with different phases never tie, and values within one array never tie, so max/min and
    /// pooling have a unique winner that a step of 1e-6 cannot change.</summary>
    public static double[] Spaced(int seed, int n, double spacing = 0.1, double phase = 0.025)
    {
        var rng = new Random(seed);
        var ks = Enumerable.Range(-n, 2 * n + 1).OrderBy(_ => rng.Next()).Take(n).ToArray();
        return [.. ks.Select(k => (double)(float)(k * spacing + phase))];
    }

    /// <summary>An F64 tensor with uniform values (see <see cref="Uniform"/>).</summary>
    public static Tensor Rand(int seed, params int[] shape) => F64(Uniform(seed, (int)new Shape(shape).Numel), shape);

    /// <summary>An F64 tensor holding <paramref name="values"/>.</summary>
    public static Tensor F64(double[] values, params int[] shape) => Tensor.FromArray(values, shape);

    /// <summary>An I32 tensor holding <paramref name="values"/>.</summary>
    public static Tensor I32(int[] values, params int[] shape) => Tensor.FromArray(values, shape);

    /// <summary>A tensor of <paramref name="values"/> as <paramref name="dtype"/> (F32 or F64) on a device.</summary>
    public static Tensor On(Device device, DType dtype, double[] values, params int[] shape) => dtype switch
    {
        DType.F64 => Tensor.FromArray<double>(values, new Shape(shape), device),
        DType.F32 => Tensor.FromArray<float>(values.Select(v => (float)v).ToArray(), new Shape(shape), device),
        _ => throw new ArgumentException($"On: {dtype} is not a compute type"),
    };

    /// <summary>Any float tensor's elements as doubles (row-major).</summary>
    public static double[] Values(Tensor t) => t.DType switch
    {
        DType.F64 => t.ToArray<double>(),
        DType.F32 => [.. t.ToArray<float>().Select(v => (double)v)],
        _ => throw new ArgumentException($"Values: {t.Describe()} is not f32/f64"),
    };

    // ---- comparison ----

    /// <summary>Asserts |actual - expected| ≤ atol + rtol·|expected| elementwise, naming the first offender.</summary>
    public static void AssertClose(double[] expected, double[] actual, double atol, double rtol, string what = "")
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} values, expected {expected.Length}");
        for (var i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (double.IsNaN(e) && double.IsNaN(a))
                continue;
            if (e == a)
                continue;   // equal infinities
            var tol = atol + rtol * Math.Abs(e);
            if (!(Math.Abs(a - e) <= tol))
                Assert.Fail($"{what}: element {i} is {a:R}, expected {e:R} (|diff| {Math.Abs(a - e):E3} > tol {tol:E3})");
        }
    }

    // ---- finite-difference gradient check ----

    /// <summary>An input of <see cref="GradCheck"/>: F64 values (row-major) and a shape.</summary>
    public readonly record struct Input(double[] Values, int[] Shape);

    /// <summary>A gradient-check input of uniform [-1, 1) values.</summary>
    public static Input In(int seed, params int[] shape) => new(Uniform(seed, (int)new Shape(shape).Numel), shape);

    /// <summary>A gradient-check input holding <paramref name="values"/>.</summary>
    public static Input In(double[] values, params int[] shape) => new(values, shape);

    /// <summary>One disagreement between autograd and central differences.</summary>
    public readonly record struct Mismatch(int InputIndex, int Element, double Analytic, double Numeric)
    {
        public override string ToString() => $"input {InputIndex} element {Element}: autograd {Analytic:R}, finite difference {Numeric:R}";
    }

    /// <summary>Options of <see cref="GradCheck"/>. <c>Skip(input, element)</c> is the allow-list of non-smooth
    /// points where a one-sided subgradient and the central difference may legitimately disagree.</summary>
    public sealed record GradCheckOptions(double H = 1e-6, double Atol = 1e-6, double Rtol = 1e-5, Func<int, int, bool>? Skip = null, int Seed = 7);

    /// <summary>Asserts that autograd's gradients of L = Σ f(inputs)·R (R a fixed random tensor, so every output
    /// element matters) match central differences (L(x+h) - L(x-h)) / 2h for every element of every input, within
    /// atol + rtol·|numeric|. Every input is differentiated (indices and other constants belong in f's closure); inputs are
    /// F64 and only their values are used: f is evaluated on fresh leaf copies for each step.</summary>
    public static void GradCheck(Func<Tensor[], Tensor> f, Input[] inputs, GradCheckOptions? options = null)
    {
        var bad = GradCheckMismatches(f, inputs, options);
        if (bad.Count > 0)
            Assert.Fail($"{bad.Count} gradient element(s) disagree; first: {string.Join("; ", bad.Take(5))}");
    }

    /// <summary>The checker itself: returns every mismatch (empty when gradients agree).</summary>
    public static List<Mismatch> GradCheckMismatches(Func<Tensor[], Tensor> f, Input[] inputs, GradCheckOptions? options = null)
    {
        var o = options ?? new GradCheckOptions();
        using var scope = TensorScope.Begin();
        var data = inputs.Select(x => (double[])x.Values.Clone()).ToArray();

        // Analytic: backward of Σ y·R from fresh leaves.
        var leaves = Leaves(data, inputs, requiresGrad: true);
        var y = f(leaves);
        Assert.Equal(DType.F64, y.DType);
        var r = Uniform(o.Seed, (int)y.Numel, -1, 1);
        using (var rt = F64(r, y.Shape.ToArray()))
        using (var weighted = F.Mul(y, rt))
        using (var loss = F.Sum(weighted))
            loss.Backward();
        var analytic = leaves.Select(l => l.Grad is null ? new double[l.Numel] : l.Grad.ToArray<double>()).ToArray();

        // Numeric: central differences, one element at a time, without recording.
        var bad = new List<Mismatch>();
        using var noGrad = Autograd.NoGrad();
        for (var i = 0; i < inputs.Length; i++)
        {
            for (var e = 0; e < data[i].Length; e++)
            {
                if (o.Skip?.Invoke(i, e) == true)
                    continue;
                var x0 = data[i][e];
                data[i][e] = x0 + o.H;
                var lp = Objective(f, data, inputs, r);
                data[i][e] = x0 - o.H;
                var lm = Objective(f, data, inputs, r);
                data[i][e] = x0;
                var numeric = (lp - lm) / (2 * o.H);
                var a = analytic[i][e];
                if (!(Math.Abs(a - numeric) <= o.Atol + o.Rtol * Math.Abs(numeric)))
                    bad.Add(new Mismatch(i, e, a, numeric));
            }
        }
        return bad;
    }

    private static Tensor[] Leaves(double[][] data, Input[] like, bool requiresGrad)
    {
        var t = new Tensor[data.Length];
        for (var i = 0; i < data.Length; i++)
        {
            t[i] = F64(data[i], like[i].Shape);
            t[i].RequiresGrad = requiresGrad;
        }
        return t;
    }

    private static double Objective(Func<Tensor[], Tensor> f, double[][] data, Input[] like, double[] r)
    {
        using var scope = TensorScope.Begin();
        var y = Values(f(Leaves(data, like, requiresGrad: false)));
        var s = 0.0;
        for (var k = 0; k < y.Length; k++)
            s += y[k] * r[k];
        return s;
    }

    /// <summary>Flat positions (row · cols + col) of a pattern's stored entries.</summary>
    public static HashSet<long> PatternPositions(Frugal.Formats.CsrPattern p)
    {
        var set = new HashSet<long>();
        for (var r = 0; r < p.Rows; r++)
        {
            for (var k = p.RowPtr[r]; k < p.RowPtr[r + 1]; k++)
                set.Add((long)r * p.Cols + p.ColIdx[k]);
        }
        return set;
    }

    /// <summary>The tensor of a dense weight (a dense layer's <c>Weight</c>).</summary>
    public static Tensor Value(this Frugal.Formats.Weight weight) => ((Frugal.Formats.DenseWeight)weight).Value;

    /// <summary>A weight as a fresh, non-differentiable dense tensor of its logical shape (a copy, outside autograd).</summary>
    public static Tensor DenseCopy(Frugal.Formats.Weight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        using (Autograd.NoGrad())
        {
            using var dense = weight.ToDense();
            return Tensor.FromArray(dense.ToArray<float>(), dense.Shape, dense.Device);
        }
    }

    /// <summary>The checkout's root (the folder of Engine.sln) above the test binaries, or null where the tests run
    /// without the checkout (the GPU bundle).</summary>
    public static string? RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Engine.sln")))
                return dir.FullName;
        }
        return null;
    }
}
