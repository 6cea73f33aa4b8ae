using Frugal.Backends;
using Frugal.Formats;

namespace Frugal.Tests;

/// <summary>The quantized-weight kernels (quantize per scheme, dequantize, the fused products X·Wᵀ and dY·W,
/// stochastic rounding) on each device against float64 references of the schemes' definitions: codes equal the
/// reference's nearest codes, round-trip errors stay within each scheme's bound, the fused products equal
/// dequantize-then-dense, and stochastic rounding is unbiased.</summary>
public class QuantizedKernelTests
{
    /// <summary>Device, bits, scheme, group (0: per row), rows, cols, batch.</summary>
    public static TheoryData<string, int, QuantScheme, int, int, int, int> Cases()
    {
        var data = new TheoryData<string, int, QuantScheme, int, int, int, int>();
        foreach (var device in new[] { "cpu", "cuda:0" })
        {
            data.Add(device, 8, QuantScheme.Symmetric, 64, 10, 128, 5);
            data.Add(device, 4, QuantScheme.Symmetric, 32, 7, 96, 3);
            data.Add(device, 4, QuantScheme.Asymmetric, 0, 5, 9, 4);     // rows of 36 bits: codes of a row straddle bytes
            data.Add(device, 2, QuantScheme.Ternary, 16, 6, 48, 2);
            data.Add(device, 2, QuantScheme.Asymmetric, 8, 4, 24, 1);
            data.Add(device, 1, QuantScheme.Binary, 0, 3, 13, 7);        // 39 bits: a partial last byte
            data.Add(device, 8, QuantScheme.Asymmetric, 128, 300, 1024, 33);   // several CPU tiles of rows
            data.Add(device, 1, QuantScheme.Binary, 32, 200, 1024, 17);
            data.Add(device, 2, QuantScheme.Symmetric, 0, 17, 40, 20);
        }
        return data;
    }

    /// <summary>Float64 reference of a scheme: each group's scale and zero, and nearest codes.</summary>
    internal static (double[] Scale, double[] Zero, int[] Codes, double[] T) Reference(float[] w, int rows, int cols, int bits, QuantScheme scheme, int group)
    {
        var g = group == 0 ? cols : group;
        var groups = rows * cols / g;
        var (scale, zero, codes, t) = (new double[groups], new double[groups], new int[w.Length], new double[w.Length]);
        var levels = (1 << bits) - 1;
        for (var k = 0; k < groups; k++)
        {
            var values = w.Skip(k * g).Take(g).Select(v => (double)v).ToArray();
            int lo = 0, hi = levels;
            switch (scheme)
            {
                case QuantScheme.Symmetric:
                    var qmax = (1 << (bits - 1)) - 1;
                    (scale[k], zero[k]) = (values.Max(Math.Abs) / qmax, 1 << (bits - 1));
                    (lo, hi) = (1, 2 * (1 << (bits - 1)) - 1);
                    break;
                case QuantScheme.Asymmetric:
                    scale[k] = (values.Max() - values.Min()) / levels;
                    if (scale[k] == 0)
                        scale[k] = values.Min() == 0 ? 1 : Math.Abs(values.Min());
                    zero[k] = -values.Min() / scale[k];
                    break;
                case QuantScheme.Ternary:
                    var delta = 0.7 * values.Average(Math.Abs);
                    var above = values.Where(v => Math.Abs(v) > delta).ToArray();
                    (scale[k], zero[k], hi) = (above.Length > 0 ? above.Average(Math.Abs) : 0, 1, 2);
                    break;
                default:
                    (scale[k], zero[k]) = (2 * values.Average(Math.Abs), 0.5);
                    break;
            }
            for (var i = 0; i < g; i++)
            {
                var index = k * g + i;
                t[index] = (scale[k] > 0 ? values[i] / scale[k] : 0) + zero[k];
                codes[index] = Math.Clamp((int)Math.Floor(t[index] + 0.5), lo, hi);
            }
        }
        return (scale, zero, codes, t);
    }

    private static int Code(byte[] codes, int i, int bits) => (codes[i * bits >> 3] >> (i * bits & 7)) & ((1 << bits) - 1);

    private static float[] Weights(int seed, int n) => [.. TestUtil.Uniform(seed, n, -1, 1).Select(v => (float)v)];

    [Theory]
    [MemberData(nameof(Cases))]
    public void QuantizeGivesTheSchemesCodesWithinItsErrorBound(string device, int bits, QuantScheme scheme, int group, int rows, int cols, int batch)
    {
        _ = batch;
        var dev = TestUtil.DeviceFor(device);
        var format = TensorFormat.Quantized(bits, group, scheme);
        var w = Weights(rows * 7 + cols, rows * cols);
        var (scale, zero, codes, t) = Reference(w, rows, cols, bits, scheme, group);
        QuantizedData data;
        float[] deq;
        using (var scope = TensorScope.Begin())
        {
            var q = F.Quantize(Tensor.FromArray(w, new Shape(rows, cols), dev), format);
            var scales = q.Scales.ToArray<float>();
            data = format.FromParts(q.Codes.ToArray<byte>(), [.. Enumerable.Range(0, scales.Length / 2).Select(k => new QuantScale(scales[2 * k], scales[2 * k + 1]))], rows, cols);
            deq = F.Dequantize(q, new Shape(rows, cols)).ToArray<float>();
        }
        TestUtil.AssertClose(scale, [.. data.Scales.Select(s => (double)s.Scale)], 1e-7, 1e-5, "scales");
        TestUtil.AssertClose(zero, [.. data.Scales.Select(s => (double)s.Zero)], 1e-6, 1e-5, "zeros");
        var g = group == 0 ? cols : group;
        var compared = 0;
        for (var i = 0; i < w.Length; i++)
        {
            // Values within float rounding of a tie may round either way; every other code must be the reference's.
            if (Math.Abs(t[i] - Math.Floor(t[i]) - 0.5) < 1e-4)
                continue;
            compared++;
            Assert.True(codes[i] == Code(data.Codes, i, bits), $"value {i} ({w[i]}): code {Code(data.Codes, i, bits)}, expected {codes[i]}");
            var expected = scale[i / g] * (codes[i] - zero[i / g]);
            Assert.True(Math.Abs(deq[i] - expected) <= 1e-6 + 1e-5 * Math.Abs(expected), $"value {i}: dequantized {deq[i]}, expected {expected}");
            if (scheme is QuantScheme.Symmetric or QuantScheme.Asymmetric)
                Assert.True(Math.Abs(deq[i] - w[i]) <= scale[i / g] / 2 * (1 + 1e-4) + 1e-7, $"value {i}: |{deq[i]} - {w[i]}| exceeds half a step {scale[i / g] / 2}");
        }
        Assert.True(compared > w.Length * 0.99, $"only {compared} of {w.Length} values compared");
        Assert.Equal(format.ToDense(data), deq);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void FusedProductsEqualDequantizeThenDense(string device, int bits, QuantScheme scheme, int group, int rows, int cols, int batch)
    {
        var dev = TestUtil.DeviceFor(device);
        var format = TensorFormat.Quantized(bits, group, scheme);
        var x = Weights(1, batch * cols);
        var dy = Weights(2, batch * rows);
        float[] deq, y, dx;
        using (var scope = TensorScope.Begin())
        {
            var q = F.Quantize(Tensor.FromArray(Weights(rows + cols, rows * cols), new Shape(rows, cols), dev), format);
            deq = F.Dequantize(q, new Shape(rows, cols)).ToArray<float>();
            var ty = Tensor.Empty(new Shape(batch, rows), device: dev);
            var tdx = Tensor.Empty(new Shape(batch, cols), device: dev);
            dev.Backend.QuantMatMul(q.View, true, Tensor.FromArray(x, new Shape(batch, cols), dev).View, ty.View);
            dev.Backend.QuantMatMul(q.View, false, Tensor.FromArray(dy, new Shape(batch, rows), dev).View, tdx.View);
            (y, dx) = (ty.ToArray<float>(), tdx.ToArray<float>());
        }
        var (ey, edx) = (new double[batch * rows], new double[batch * cols]);
        for (var b = 0; b < batch; b++)
        {
            for (var r = 0; r < rows; r++)
            {
                for (var c = 0; c < cols; c++)
                {
                    ey[b * rows + r] += (double)x[b * cols + c] * deq[r * cols + c];
                    edx[b * cols + c] += (double)dy[b * rows + r] * deq[r * cols + c];
                }
            }
        }
        TestUtil.AssertClose(ey, [.. y.Select(v => (double)v)], 1e-5 * Math.Sqrt(cols), 1e-4, "y = x·Wᵀ");
        TestUtil.AssertClose(edx, [.. dx.Select(v => (double)v)], 1e-5 * Math.Sqrt(rows), 1e-4, "dx = dy·W");
    }

    [Theory]
    [MemberData(nameof(TestUtil.Devices), MemberType = typeof(TestUtil))]
    public void StochasticRoundingIsUnbiasedAndReproducible(string device)
    {
        var dev = TestUtil.DeviceFor(device);
        const int Rows = 4, Cols = 64, Draws = 2000;
        var format = TensorFormat.Quantized(4, 32, QuantScheme.Symmetric);
        var w = Weights(5, Rows * Cols);
        var (scale, _, _, t) = Reference(w, Rows, Cols, 4, QuantScheme.Symmetric, 32);
        var sum = new double[w.Length];
        byte[]? first = null;
        using var dense = Tensor.FromArray(w, new Shape(Rows, Cols), dev);
        for (var d = 0; d < Draws; d++)
        {
            using var scope = TensorScope.Begin();
            var q = F.Quantize(dense, format, (42, (ulong)(d * w.Length)));
            var codes = q.Codes.ToArray<byte>();
            first ??= codes;
            var values = F.Dequantize(q, new Shape(Rows, Cols)).ToArray<float>();
            for (var i = 0; i < w.Length; i++)
            {
                // Only the two codes around the value are ever drawn.
                var c = Code(codes, i, 4);
                Assert.True(c == (int)Math.Floor(t[i]) || c == (int)Math.Floor(t[i]) + 1 || Math.Abs(t[i] - Math.Round(t[i])) < 1e-4, $"draw {d}, value {i}: code {c} for t = {t[i]}");
                sum[i] += values[i];
            }
        }
        for (var i = 0; i < w.Length; i++)
        {
            // Each draw is within one step s of w with variance ≤ s²/4: the mean of 2000 draws is within 5 standard
            // errors, 5·(s/2)/√2000 ≈ 0.056·s.
            var s = scale[i / 32];
            Assert.True(Math.Abs(sum[i] / Draws - w[i]) <= 5 * s / 2 / Math.Sqrt(Draws), $"value {i}: mean {sum[i] / Draws} of {Draws} draws, weight {w[i]}, step {s}");
        }
        using (var scope = TensorScope.Begin())
            Assert.Equal(first, F.Quantize(dense, format, (42, 0)).Codes.ToArray<byte>());
    }

    /// <summary>Device, bits, scheme, group, rows, cols of a master-free 8-bit Adam step.</summary>
    public static TheoryData<string, int, QuantScheme, int, int, int> QuantAdamCases()
    {
        var data = new TheoryData<string, int, QuantScheme, int, int, int>();
        foreach (var device in new[] { "cpu", "cuda:0" })
        {
            data.Add(device, 8, QuantScheme.Symmetric, 64, 9, 512);      // two blocks and a quarter
            data.Add(device, 4, QuantScheme.Symmetric, 64, 40, 128);     // 5,120 values: a partial last block
            data.Add(device, 4, QuantScheme.Asymmetric, 32, 3, 2048);    // one block per row
            data.Add(device, 2, QuantScheme.Ternary, 16, 50, 96);
            data.Add(device, 1, QuantScheme.Binary, 128, 20, 256);
        }
        return data;
    }

    /// <summary>The master-free 8-bit Adam step of a packed weight equals, to the bit, its three ops in turn on the
    /// same device (dequantize, the 8-bit step of F32 values, stochastic quantization), over three steps: codes,
    /// scales, both moments' codes and maxima.</summary>
    [Theory]
    [MemberData(nameof(QuantAdamCases))]
    public void QuantAdam8BitStepEqualsItsThreeOps(string device, int bits, QuantScheme scheme, int group, int rows, int cols)
    {
        var dev = TestUtil.DeviceFor(device);
        using var scope = TensorScope.Begin();
        var format = TensorFormat.Quantized(bits, group, scheme);
        var n = rows * cols;
        var blocks = (n + Optim.Adam.StateBlock - 1) / Optim.Adam.StateBlock;
        using var dense = Tensor.FromArray(Weights(21, n), new Shape(rows, cols), dev);
        var (fused, composed) = (F.Quantize(dense, format), F.Quantize(dense, format));
        Tensor Moments(int seed, DType dtype, double low, double high) => Tensor.FromArray([.. TestUtil.Uniform(seed, blocks * Optim.Adam.StateBlock, low, high).Select(v => (float)Math.Round(v))], new Shape(blocks, Optim.Adam.StateBlock), dev).To(dtype);
        Tensor Maxima(int seed) => Tensor.FromArray([.. TestUtil.Uniform(seed, blocks, 0.01, 0.1).Select(v => (float)v)], new Shape(blocks, 1), dev);
        Tensor[] State() => [Moments(22, DType.I8, -127, 127), Maxima(23), Moments(24, DType.U8, 0, 255), Maxima(25)];
        var (state, copy) = (State(), State());
        for (var step = 1; step <= 3; step++)
        {
            using var g = Tensor.FromArray(Weights(30 + step, n), new Shape(n), dev);
            var adam = new AdamArgs(1e-2, 0.9, 0.999, 1e-8, 0.01, true, step);
            var quantize = new QuantizeArgs(scheme, true, 77, (ulong)(step * n));
            dev.Backend.QuantAdam8BitStep(fused.View, g.View, state[0].View, state[1].View, state[2].View, state[3].View, adam, quantize);
            using var values = Tensor.Empty(new Shape(n), DType.F32, dev);
            dev.Backend.Dequantize(composed.View, values.View);
            dev.Backend.Adam8BitStep(values.View, g.View, copy[0].View, copy[1].View, copy[2].View, copy[3].View, adam);
            dev.Backend.Quantize(composed.View, values.View, quantize);
            Assert.Equal(composed.Codes.ToArray<byte>(), fused.Codes.ToArray<byte>());
            Assert.Equal(composed.Scales.ToArray<float>(), fused.Scales.ToArray<float>());
            Assert.Equal(copy[0].ToArray<sbyte>(), state[0].ToArray<sbyte>());
            Assert.Equal(copy[1].ToArray<float>(), state[1].ToArray<float>());
            Assert.Equal(copy[2].ToArray<byte>(), state[2].ToArray<byte>());
            Assert.Equal(copy[3].ToArray<float>(), state[3].ToArray<float>());
        }
        // The step moved the weight: the codes are no longer those of the initial weight.
        Assert.NotEqual(F.Quantize(dense, format).Codes.ToArray<byte>(), fused.Codes.ToArray<byte>());
    }

    [Theory]
    [InlineData("cpu")]
    [InlineData("cuda:0")]
    public void QuantAdam8BitStepRefusesGroupsThatDoNotDivideTheStateBlock(string device)
    {
        var dev = TestUtil.DeviceFor(device);
        using var scope = TensorScope.Begin();
        var w = F.Quantize(Tensor.FromArray(Weights(3, 4 * 784), new Shape(4, 784), dev), TensorFormat.Quantized(8, 0, QuantScheme.Symmetric));
        using var g = Tensor.Zeros(new Shape(4 * 784), DType.F32, dev);
        using var codes = Tensor.Zeros(new Shape(2, Optim.Adam.StateBlock), DType.I8, dev);
        using var roots = Tensor.Zeros(new Shape(2, Optim.Adam.StateBlock), DType.U8, dev);
        using var maxima = Tensor.Zeros(new Shape(2, 1), DType.F32, dev);
        var e = Assert.Throws<NotSupportedException>(() => dev.Backend.QuantAdam8BitStep(w.View, g.View, codes.View, maxima.View, roots.View, maxima.View, new AdamArgs(1e-3, 0.9, 0.999, 1e-8, 0, false, 1), new QuantizeArgs(QuantScheme.Symmetric, true, 1, 0)));
        Assert.Contains("groups of 784 values do not divide its blocks of 2048", e.Message);
    }

    [Fact]
    public void CudaCodesEqualTheCpuCodesBitForBit()
    {
        var cuda = TestUtil.DeviceFor("cuda:0");
        foreach (var scheme in Enum.GetValues<QuantScheme>())
        {
            // 8 bits too: the CPU writes 8-bit codes eight at a time in vectors.
            int[] widths = scheme switch { QuantScheme.Binary => [1], QuantScheme.Ternary => [2], _ => [4, 8] };
            foreach (var bits in widths)
            {
                var format = TensorFormat.Quantized(bits, 0, scheme);
                var w = Weights(9, 33 * 77);
                foreach (var stochastic in new (ulong, ulong)?[] { null, (7, 100) })
                {
                    using var scope = TensorScope.Begin();
                    var onCpu = F.Quantize(Tensor.FromArray(w, new Shape(33, 77)), format, stochastic);
                    var onGpu = F.Quantize(Tensor.FromArray(w, new Shape(33, 77), cuda), format, stochastic);
                    Assert.Equal(onCpu.Codes.ToArray<byte>(), onGpu.Codes.ToArray<byte>());
                    Assert.Equal(onCpu.Scales.ToArray<float>(), onGpu.Scales.ToArray<float>());
                }
            }
        }
    }
}
