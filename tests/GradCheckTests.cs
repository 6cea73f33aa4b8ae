using Frugal.Backends;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>Every differentiable op against float64 central differences (see <see cref="TestUtil.GradCheck"/>):
/// small shapes, inputs generated away from kinks (relu/abs at 0, max/min/pool ties) instead of allow-listing them.</summary>
public class GradCheckTests
{
    private static int[] Dims(string s) => s.Length == 0 ? [] : [.. s.Split('x').Select(int.Parse)];

    private static int Count(int[] shape) => (int)new Shape(shape).Numel;

    // ---- the checker itself ----

    [Fact]
    public void Checker_DetectsAWrongGradient()
    {
        // x · detach(x) has derivative 2x, autograd sees only x: every element must be reported.
        var bad = GradCheckMismatches(t => F.Mul(t[0], t[0].Detach()), [In(AwayFromZero(1, 6, 0.2), 2, 3)]);
        Assert.Equal(6, bad.Count);
    }

    [Fact]
    public void Checker_AllowListCoversAKink()
    {
        // relu at exactly 0: autograd's subgradient is 0, the central difference 0.5. Only the allow-list hides it.
        double[] x = [0.5, 0.0, -0.5, 0.25];
        var bad = GradCheckMismatches(t => t[0].Relu(), [In(x, 4)]);
        Assert.Equal(1, Assert.Single(bad).Element);
        Assert.Empty(GradCheckMismatches(t => t[0].Relu(), [In(x, 4)], new GradCheckOptions(Skip: (_, e) => x[e] == 0)));
    }

    // ---- elementwise ----

    public static TheoryData<string, string, string> BinaryCases()
    {
        var d = new TheoryData<string, string, string>();
        string[][] shapes = [["2x3", "2x3"], ["2x3", "3"], ["3", "2x3"], ["3x1", "1x4"], ["", "2x3"], ["2x3", ""], ["2x1x3", "4x1"], ["", ""]];
        foreach (var op in new[] { "Add", "Sub", "Mul", "Div", "Pow", "Maximum", "Minimum" })
        {
            foreach (var s in shapes)
                d.Add(op, s[0], s[1]);
        }
        return d;
    }

    [Theory]
    [MemberData(nameof(BinaryCases))]
    public void Binary(string op, string shapeA, string shapeB)
    {
        int[] sa = Dims(shapeA), sb = Dims(shapeB);
        int na = Count(sa), nb = Count(sb);
        var (a, b) = op switch
        {
            "Div" => (Uniform(1, na), AwayFromZero(2, nb, 0.5, 1.5)),
            "Pow" => (Uniform(1, na, 0.5, 1.5), Uniform(2, nb, -1.5, 2)),
            "Maximum" or "Minimum" => (Spaced(1, na, 0.1, 0.025), Spaced(2, nb, 0.1, 0.075)),
            _ => (Uniform(1, na), Uniform(2, nb)),
        };
        Func<Tensor, Tensor, Tensor> f = op switch
        {
            "Add" => (x, y) => x + y,
            "Sub" => (x, y) => x - y,
            "Mul" => (x, y) => x * y,
            "Div" => (x, y) => x / y,
            "Pow" => F.Pow,
            "Maximum" => F.Maximum,
            "Minimum" => F.Minimum,
            _ => throw new ArgumentException(op),
        };
        GradCheck(t => f(t[0], t[1]), [In(a, sa), In(b, sb)]);
    }

    [Fact]
    public void Binary_SameTensorOnBothSides()
    {
        // Both edges of one node lead to the same leaf: gradients must accumulate (d(x·x)/dx = 2x).
        GradCheck(t => F.Mul(t[0], t[0]), [In(3, 2, 3)]);
        GradCheck(t => F.Div(t[0], t[0].Add(3)), [In(4, 5)]);
    }

    [Fact]
    public void Where_Broadcasting()
    {
        GradCheck(t =>
        {
            using var cond = Tensor.FromArray<byte>([1, 0, 1, 0, 0, 1], new Shape(2, 3));
            return F.Where(cond, t[0], t[1]);
        }, [In(1, 2, 3), In(2, 3)]);
        GradCheck(t =>
        {
            using var cond = Tensor.FromArray<byte>([1, 0, 0], new Shape(3, 1));
            return F.Where(cond, t[0], t[1]);
        }, [In(1, 1, 4), In(2, 3, 4)]);
    }

    public static TheoryData<string> UnaryCases() =>
        ["Neg", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Gelu", "Sqrt", "Abs", "AddScalar", "MulScalar", "SubScalar", "DivScalar",
         "Pow3", "PowHalf", "PowNeg", "Pow2OfNegatives", "NegOperator"];

    [Theory]
    [MemberData(nameof(UnaryCases))]
    public void Unary(string op)
    {
        const int n = 12;
        var x = op switch
        {
            "Log" or "Sqrt" or "PowHalf" or "PowNeg" => Uniform(1, n, 0.2, 2),
            "Relu" or "Abs" => AwayFromZero(1, n, 0.05, 2),
            "Exp" or "Tanh" or "Sigmoid" or "Gelu" => Uniform(1, n, -3, 3),
            "Pow2OfNegatives" => Uniform(1, n, -2, -0.1),
            _ => Uniform(1, n, -2, 2),
        };
        var f = UnaryMethods.GetValueOrDefault(op) ?? op switch
        {
            "NegOperator" => t => -t,
            "AddScalar" => t => t + 1.5,
            "SubScalar" => t => t - 0.7,
            "MulScalar" => t => 2.5 * t,
            "DivScalar" => t => t / 4.0,
            "Pow3" => t => t.Pow(3),
            "PowHalf" => t => t.Pow(0.5),
            "PowNeg" => t => t.Pow(-1.5),
            "Pow2OfNegatives" => t => t.Pow(2),
            _ => throw new ArgumentException(op),
        };
        GradCheck(t => f(t[0]), [In(x, 3, 4)]);
        // Non-contiguous input: the kernel gathers first, the backward saves a contiguous copy.
        GradCheck(t =>
        {
            using var tt = t[0].Transpose(0, 1);
            return f(tt);
        }, [In(x, 3, 4)]);
    }

    [Fact]
    public void Unary_Chain()
    {
        GradCheck(t =>
        {
            using var a = t[0].Tanh();
            using var b = a.Mul(2);
            using var c = b.Exp();
            using var d = c.Add(1);
            using var e = d.Log();
            return e.Sqrt();
        }, [In(5, 2, 5)]);
    }

    // ---- views ----

    public static TheoryData<string> ViewCases() =>
        ["Reshape", "ReshapeInfer", "ReshapeNonContiguous", "Transpose", "Permute", "Narrow", "NarrowTwice", "NarrowOfTransposed", "Expand",
         "ExpandNewDims", "Contiguous", "ContiguousOfTransposed", "Unsqueeze", "Squeeze", "Flatten", "FlattenMiddle", "Chain"];

    [Theory]
    [MemberData(nameof(ViewCases))]
    public void Views(string op)
    {
        Func<Tensor, Tensor> f = op switch
        {
            "Reshape" => x => x.Reshape(4, 6),
            "ReshapeInfer" => x => x.Reshape(-1, 3),
            "ReshapeNonContiguous" => x => { using var t = x.Transpose(0, 2); return t.Reshape(-1, 2); },
            "Transpose" => x => x.Transpose(0, 2),
            "Permute" => x => x.Permute(2, 0, 1),
            "Narrow" => x => x.Narrow(1, 1, 2),
            "NarrowTwice" => x => { using var t = x.Narrow(2, 1, 3); return t.Narrow(0, 1, 1); },
            "NarrowOfTransposed" => x => { using var t = x.Transpose(1, 2); return t.Narrow(1, 2, 2); },
            "Expand" => x => { using var t = x.Narrow(2, 0, 1); return t.Expand(2, 3, 5); },
            "ExpandNewDims" => x => { using var t = x.Reshape(2, 3, 4, 1); return t.Expand(3, 2, 3, 4, 2); },
            "Contiguous" => x => x.Contiguous(),
            "ContiguousOfTransposed" => x => { using var t = x.Permute(1, 2, 0); return t.Contiguous(); },
            "Unsqueeze" => x => F.Unsqueeze(x, -1),
            "Squeeze" => x => { using var t = F.Unsqueeze(x, 1); return F.Squeeze(t, 1); },
            "Flatten" => x => F.Flatten(x),
            "FlattenMiddle" => x => { using var t = x.Transpose(0, 1); return F.Flatten(t, 1, 2); },
            "Chain" => x =>
            {
                using var a = x.Permute(1, 0, 2);
                using var b = a.Narrow(0, 1, 2);
                using var c = b.Reshape(4, 4);
                using var d = c.Transpose(0, 1);
                return F.Unsqueeze(d, 0);
            },
            _ => throw new ArgumentException(op),
        };
        // A following multiply makes the view's consumer a real op (its gradient is non-contiguous for some views).
        GradCheck(t =>
        {
            using var v = f(t[0]);
            return v * v;
        }, [In(1, 2, 3, 4)]);
    }

    [Fact]
    public void Concat()
    {
        GradCheck(t => F.Concat([t[0], t[1], t[2]], 1), [In(1, 2, 1, 3), In(2, 2, 2, 3), In(3, 2, 3, 3)]);
        GradCheck(t => F.Concat([t[0], t[1]], 0), [In(1, 2, 3), In(2, 1, 3)]);
        GradCheck(t =>
        {
            using var a = t[0].Transpose(0, 1);
            return F.Concat([a, t[1], a], -1);
        }, [In(1, 2, 3), In(2, 3, 4)]);
    }

    [Fact]
    public void IndexSelect_RepeatedIndices()
    {
        GradCheck(t =>
        {
            using var idx = I32([2, 0, 2, 2, 3], 5);
            return F.IndexSelect(t[0], 0, idx);
        }, [In(1, 4, 3)]);
        GradCheck(t =>
        {
            using var idx = I32([1, 1, 0, 3], 4);
            return F.IndexSelect(t[0], 1, idx);
        }, [In(2, 2, 4, 3)]);
        GradCheck(t =>
        {
            using var idx = I32([2, 2, 0], 3);
            using var tt = t[0].Transpose(0, 2);
            return F.IndexSelect(tt, -1, idx);
        }, [In(3, 3, 2, 2)]);
    }

    // ---- reductions ----

    public static TheoryData<string, string, bool> ReduceCases()
    {
        var d = new TheoryData<string, string, bool>();
        foreach (var op in new[] { "Sum", "Mean", "Max", "Min" })
        {
            foreach (var dims in new[] { "", "0", "1", "2", "-1", "0,2", "0,1", "1,2", "0,1,2" })
            {
                d.Add(op, dims, false);
                d.Add(op, dims, true);
            }
        }
        return d;
    }

    [Theory]
    [MemberData(nameof(ReduceCases))]
    public void Reduce(string op, string dims, bool keepDim)
    {
        int[] axes = dims.Length == 0 ? [] : [.. dims.Split(',').Select(int.Parse)];
        Func<Tensor, Tensor> f = op switch
        {
            "Sum" => x => F.Sum(x, axes, keepDim),
            "Mean" => x => F.Mean(x, axes, keepDim),
            "Max" => x => F.Max(x, axes, keepDim),
            "Min" => x => F.Min(x, axes, keepDim),
            _ => throw new ArgumentException(op),
        };
        var values = Spaced(1, 24);
        GradCheck(t => f(t[0]), [In(values, 2, 3, 4)]);
        // The same reduction of a permuted (non-contiguous) view.
        GradCheck(t =>
        {
            using var p = t[0].Permute(2, 0, 1);
            return f(p);
        }, [In(values, 3, 4, 2)]);
    }

    [Fact]
    public void Reduce_WholeTensor()
    {
        GradCheck(t => t[0].Sum(), [In(1, 3, 4)]);
        GradCheck(t => t[0].Mean(), [In(1, 3, 4)]);
        GradCheck(t => F.Max(t[0], []), [In(Spaced(2, 12), 3, 4)]);
        GradCheck(t => F.Min(t[0], []), [In(Spaced(3, 12), 3, 4)]);
    }

    [Fact]
    public void Max_TiesShareTheGradient()
    {
        // Ties are a kink: there the rule (PyTorch's amax) is checked exactly instead of by differences.
        using var scope = TensorScope.Begin();
        var x = F64([1, 3, 3, 0, 2, 5, 5, 5], 2, 4);
        x.RequiresGrad = true;
        using var m = F.Max(x, [1]);
        using var g = F64([2, 3], 2);
        m.Backward(g.Contiguous());
        Assert.Equal([3, 5], m.ToArray<double>());
        Assert.Equal([0, 1, 1, 0, 0, 1, 1, 1], x.Grad!.ToArray<double>());
    }

    // ---- matrix products ----

    public static TheoryData<bool, bool> TransposeFlags() => new() { { false, false }, { true, false }, { false, true }, { true, true } };

    [Theory]
    [MemberData(nameof(TransposeFlags))]
    public void MatMul_2d(bool transA, bool transB)
    {
        int[] sa = transA ? [4, 3] : [3, 4], sb = transB ? [5, 4] : [4, 5];
        GradCheck(t => F.MatMul(t[0], t[1], transA, transB), [In(1, sa), In(2, sb)]);
    }

    [Theory]
    [MemberData(nameof(TransposeFlags))]
    public void MatMul_Batched(bool transA, bool transB)
    {
        // Batch dims broadcast: [2, 1] with [3] -> [2, 3].
        int[] sa = transA ? [2, 1, 4, 3] : [2, 1, 3, 4], sb = transB ? [3, 5, 4] : [3, 4, 5];
        GradCheck(t => F.MatMul(t[0], t[1], transA, transB), [In(1, sa), In(2, sb)]);
    }

    [Theory]
    [MemberData(nameof(TransposeFlags))]
    public void MatMul_3dBy2d(bool transA, bool transB)
    {
        // transA = false takes the folding path (one GEMM over the stacked rows); true the batched one.
        int[] sa = transA ? [2, 4, 3] : [2, 3, 4], sb = transB ? [5, 4] : [4, 5];
        GradCheck(t => F.MatMul(t[0], t[1], transA, transB), [In(1, sa), In(2, sb)]);
    }

    [Fact]
    public void MatMul_BroadcastShapes()
    {
        GradCheck(t => t[0].MatMul(t[1]), [In(1, 3, 4), In(2, 2, 4, 5)]);
        GradCheck(t => t[0].MatMul(t[1]), [In(1, 1, 3, 4), In(2, 2, 4, 5)]);
        GradCheck(t => t[0].MatMul(t[1]), [In(1, 2, 3, 4), In(2, 2, 4, 5)]);
        GradCheck(t => t[0].MatMul(t[1]), [In(1, 2, 3, 1), In(2, 1, 1, 5)]);
    }

    [Fact]
    public void MatMul_TransposedViewsAsInputs()
    {
        GradCheck(t =>
        {
            using var a = t[0].Transpose(0, 1);
            using var b = t[1].Transpose(0, 1);
            return a.MatMul(b);
        }, [In(1, 4, 3), In(2, 5, 4)]);
        GradCheck(t =>
        {
            using var a = t[0].Transpose(1, 2);
            return F.MatMul(a, t[1], false, true);
        }, [In(1, 2, 4, 3), In(2, 2, 5, 4)]);
        GradCheck(t =>
        {
            // A narrowed (strided, non-packed) operand and a transposed 3-D stack times a 2-D matrix.
            using var a = t[0].Narrow(1, 1, 3);
            using var b = t[1].Transpose(1, 2);
            using var c = a.MatMul(t[2]);
            return F.MatMul(b, c);
        }, [In(1, 3, 6), In(2, 2, 3, 4), In(3, 3, 2)]);
    }

    [Fact]
    public void Linear()
    {
        GradCheck(t => F.Linear(t[0], t[1], t[2]), [In(1, 3, 4), In(2, 5, 4), In(3, 5)]);
        GradCheck(t => F.Linear(t[0], t[1]), [In(1, 3, 4), In(2, 5, 4)]);
        GradCheck(t => F.Linear(t[0], t[1], t[2]), [In(1, 2, 3, 4), In(2, 5, 4), In(3, 5)]);
        GradCheck(t => F.Linear(t[0], t[1], t[2]), [In(1, 4), In(2, 5, 4), In(3, 5)]);
    }

    [Fact]
    public void Linear_OnlyParametersRequireGrad()
    {
        // The input is a constant (as the first layer's data): only weight and bias get gradients.
        var x = Uniform(9, 12);
        GradCheck(t =>
        {
            using var xc = F64(x, 3, 4);
            return F.Linear(xc, t[0], t[1]);
        }, [In(2, 5, 4), In(3, 5)]);
    }

    // ---- normalisation, losses, lookups ----

    [Fact]
    public void Softmax_And_LogSoftmax()
    {
        foreach (var dim in new[] { -1, 0 })
        {
            GradCheck(t => F.Softmax(t[0], dim), [In(1, 3, 5)]);
            GradCheck(t => F.LogSoftmax(t[0], dim), [In(2, 3, 5)]);
        }
        GradCheck(t => F.Softmax(t[0], 1), [In(3, 2, 3, 4)]);
        GradCheck(t => F.LogSoftmax(t[0], 1), [In(4, 2, 3, 4)]);
        GradCheck(t =>
        {
            using var tt = t[0].Transpose(0, 1);
            return F.LogSoftmax(tt, -1);
        }, [In(5, 4, 3)]);
    }

    [Fact]
    public void CrossEntropy()
    {
        GradCheck(t =>
        {
            using var y = I32([1, 0, 4, 2], 4);
            return F.CrossEntropy(t[0], y);
        }, [In(1, 4, 5)]);
        GradCheck(t =>
        {
            using var y = I32([1, -100, 4, -100], 4);
            return F.CrossEntropy(t[0], y);
        }, [In(2, 4, 5)]);
        GradCheck(t =>
        {
            using var y = I32([3, 2, 2, 0], 4);
            return F.CrossEntropy(t[0], y, ignoreIndex: 2);
        }, [In(3, 4, 5)]);
        GradCheck(t =>
        {
            // Scaled logits of a non-contiguous view, as a model's transposed head would give.
            using var y = I32([0, 2, 1], 3);
            using var tt = t[0].Transpose(0, 1);
            using var s = tt.Mul(3);
            return F.CrossEntropy(s, y);
        }, [In(4, 3, 3)]);
    }

    [Fact]
    public void LayerNorm()
    {
        GradCheck(t => F.LayerNorm(t[0], t[1], t[2]), [In(1, 3, 5), In(Uniform(2, 5, 0.5, 1.5), 5), In(3, 5)]);
        GradCheck(t => F.LayerNorm(t[0], null, null), [In(1, 3, 5)]);
        GradCheck(t => F.LayerNorm(t[0], t[1], null), [In(1, 2, 2, 4), In(Uniform(2, 4, 0.5, 1.5), 4)]);
        GradCheck(t => F.LayerNorm(t[0], null, t[1]), [In(1, 2, 2, 4), In(3, 4)]);
        GradCheck(t =>
        {
            using var tt = t[0].Transpose(0, 1);
            return F.LayerNorm(tt, t[1], t[2], eps: 1e-3);
        }, [In(4, 6, 3), In(5, 6), In(6, 6)]);
    }

    [Fact]
    public void Embedding()
    {
        GradCheck(t =>
        {
            using var idx = I32([4, 0, 4, 1, 1, 4], 2, 3);
            return F.Embedding(idx, t[0]);
        }, [In(1, 5, 3)]);
    }

    // ---- convolution and pooling ----

    public static TheoryData<string> ConvCases() =>
    [
        // n c h w oc kh kw stride padding dilation bias
        "1 1 5 5 1 3 3 1 0 1 1",
        "2 3 5 6 2 3 3 1 1 1 0",
        "1 2 7 6 3 3 3 2 1 1 1",
        "2 2 6 5 2 2 2 2 0 1 0",
        "1 2 7 7 2 3 3 1 0 2 1",
        "1 2 8 7 2 3 3 2 1 2 1",
        "1 3 5 7 2 2 3 1 1 1 1",
        "2 2 5 5 3 1 1 2 0 1 1",
    ];

    [Theory]
    [MemberData(nameof(ConvCases))]
    public void Conv2d(string geometry)
    {
        var g = geometry.Split(' ').Select(int.Parse).ToArray();
        int n = g[0], c = g[1], h = g[2], w = g[3], oc = g[4], kh = g[5], kw = g[6], stride = g[7], padding = g[8], dilation = g[9];
        var bias = g[10] == 1;
        Input[] inputs = bias ? [In(1, n, c, h, w), In(2, oc, c, kh, kw), In(3, oc)] : [In(1, n, c, h, w), In(2, oc, c, kh, kw)];
        GradCheck(t => F.Conv2d(t[0], t[1], bias ? t[2] : null, stride, padding, dilation), inputs);
    }

    [Fact]
    public void Conv2d_PartialGradients()
    {
        var x = Uniform(1, 2 * 2 * 5 * 5);
        var wt = Uniform(2, 3 * 2 * 3 * 3);
        // Only the bias requires a gradient (a frozen conv with a trainable bias).
        GradCheck(t =>
        {
            using var xc = F64(x, 2, 2, 5, 5);
            using var wc = F64(wt, 3, 2, 3, 3);
            return F.Conv2d(xc, wc, t[0], padding: 1);
        }, [In(3, 3)]);
        // Only the input requires a gradient (a frozen layer inside a network).
        GradCheck(t =>
        {
            using var wc = F64(wt, 3, 2, 3, 3);
            return F.Conv2d(t[0], wc, null, stride: 2, padding: 1);
        }, [In(x, 2, 2, 5, 5)]);
        // Only the weight.
        GradCheck(t =>
        {
            using var xc = F64(x, 2, 2, 5, 5);
            return F.Conv2d(xc, t[0], null, dilation: 2);
        }, [In(wt, 3, 2, 3, 3)]);
    }

    public static TheoryData<int, int, int> PoolCases() => new() { { 2, 2, 0 }, { 3, 2, 1 }, { 3, 1, 1 }, { 2, 1, 0 }, { 3, 3, 0 }, { 2, 2, 1 } };

    [Theory]
    [MemberData(nameof(PoolCases))]
    public void MaxPool2d(int kernel, int stride, int padding)
    {
        GradCheck(t => F.MaxPool2d(t[0], kernel, stride, padding), [In(Spaced(1, 2 * 2 * 6 * 7), 2, 2, 6, 7)]);
    }

    [Theory]
    [MemberData(nameof(PoolCases))]
    public void AvgPool2d(int kernel, int stride, int padding)
    {
        GradCheck(t => F.AvgPool2d(t[0], kernel, stride, padding), [In(1, 2, 2, 6, 7)]);
    }

    [Fact]
    public void SmallCnn()
    {
        // conv -> relu -> maxpool -> flatten -> linear -> cross-entropy, all inputs differentiated together.
        GradCheck(t =>
        {
            using var y = I32([1, 0], 2);
            using var c = F.Conv2d(t[0], t[1], t[2], padding: 1);
            using var r = c.Tanh();
            using var p = F.MaxPool2d(r, 2);
            using var f = F.Flatten(p, 1);
            using var logits = F.Linear(f, t[3], t[4]);
            return F.CrossEntropy(logits, y);
        }, [In(1, 2, 1, 4, 4), In(2, 2, 1, 3, 3), In(3, 2), In(4, 2, 8), In(5, 2)]);
    }

    // ---- dtype casts, dropout, checkpointing ----

    [Fact]
    public void Cast_F64_F32_F64_Chain()
    {
        // Through f32 a step of 1e-6 drowns in rounding: use h = 1e-3 (the chain is linear, so no truncation error)
        // and a tolerance above the f32 rounding of x ± h divided by 2h (≈ 6e-8 / 2e-3 = 3e-5).
        GradCheck(t =>
        {
            using var f = t[0].To(DType.F32);
            using var d = f.To(DType.F64);
            return d * t[1];
        }, [In(1, 3, 4), In(2, 3, 4)], new GradCheckOptions(H: 1e-3, Atol: 2e-4, Rtol: 1e-4));

        // The gradient crossing the casts is exactly the incoming one when it is f32-representable.
        using var scope = TensorScope.Begin();
        var x = Rand(3, 2, 3);
        x.RequiresGrad = true;
        using var x32 = x.To(DType.F32);
        using var y = x32.To(DType.F64);
        var g = Uniform(4, 6);
        y.Backward(F64(g, 2, 3));
        Assert.Equal(g, x.Grad!.ToArray<double>());
    }

    [Fact]
    public void Dropout()
    {
        const double p = 0.3;
        const ulong seed = 1234;
        GradCheck(t =>
        {
            Rng.ManualSeed(seed);
            return F.Dropout(t[0], p, training: true);
        }, [In(1, 4, 5)]);

        // Gradient of Σ dropout(x) = mask / (1 - p), mask from the counter-based stream: keep where u ≥ p.
        using var scope = TensorScope.Begin();
        Rng.ManualSeed(seed);
        var x = Rand(2, 4, 5);
        x.RequiresGrad = true;
        using var y = F.Dropout(x, p, training: true);
        using var s = y.Sum();
        s.Backward();
        var grad = x.Grad!.ToArray<double>();
        var kept = 0;
        for (var i = 0; i < grad.Length; i++)
        {
            var keep = Philox.Uniform(seed, (ulong)i) >= p;
            kept += keep ? 1 : 0;
            Assert.Equal(keep ? 1 / (1 - p) : 0, grad[i], 12);
        }
        Assert.InRange(kept, 1, grad.Length - 1);   // the mask is neither all-keep nor all-drop
    }

    private static Tensor TwoLayer(Tensor x, Tensor w1, Tensor b1, Tensor w2, double dropout = 0)
    {
        using var h = F.Linear(x, w1, b1);
        using var a = h.Tanh();
        using var d = dropout > 0 ? F.Dropout(a, dropout, training: true) : a.Contiguous();
        return F.Linear(d, w2);
    }

    [Fact]
    public void Checkpoint_FiniteDifferences()
    {
        // Parameters are captured by the closure, not passed as checkpoint inputs: they still get gradients.
        GradCheck(t => Checkpoint.Run(xs => TwoLayer(xs[0], t[1], t[2], t[3]), t[0]), [In(1, 3, 4), In(2, 5, 4), In(3, 5), In(4, 2, 5)]);
    }

    [Theory]
    [InlineData(true, 0.0)]
    [InlineData(false, 0.0)]
    [InlineData(true, 0.4)]
    public void Checkpoint_MatchesPlainRun(bool inputRequiresGrad, double dropout)
    {
        using var scope = TensorScope.Begin();
        var x = Rand(1, 3, 4);
        var w1 = Rand(2, 5, 4);
        var b1 = Rand(3, 5);
        var w2 = Rand(4, 2, 5);
        x.RequiresGrad = inputRequiresGrad;
        w1.RequiresGrad = b1.RequiresGrad = w2.RequiresGrad = true;
        var r = Rand(5, 3, 2);
        Tensor[] leaves = [x, w1, b1, w2];

        double[][] Run(bool checkpointed)
        {
            foreach (var l in leaves)
                l.Grad = null;
            Rng.ManualSeed(77);
            using var y = checkpointed ? Checkpoint.Run(xs => TwoLayer(xs[0], w1, b1, w2, dropout), x) : TwoLayer(x, w1, b1, w2, dropout);
            Rng.ManualSeed(999);   // whatever the stream does after the forward, the recompute must reuse the forward's draws
            using var yr = y * r;
            using var loss = yr.Sum();
            loss.Backward();
            return [.. leaves.Select(l => l.Grad?.ToArray<double>() ?? [])];
        }

        var plain = Run(false);
        var ckpt = Run(true);
        for (var i = 0; i < leaves.Length; i++)
        {
            Assert.Equal(plain[i].Length, ckpt[i].Length);
            AssertClose(plain[i], ckpt[i], 1e-12, 1e-12, $"leaf {i}");
        }
        Assert.Equal(inputRequiresGrad, plain[0].Length > 0);
        Assert.Contains(plain[1], v => v != 0);
    }
}
