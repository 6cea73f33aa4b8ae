using Frugal.Backends;

namespace Frugal.Tests;

/// <summary>The Im2Col and Col2Im kernel-table entries (the sparse convolution's columns) on each device: the
/// columns equal a float64 reference built from the definition, for a chunk of images inside the batch, and Col2Im is
/// Im2Col's adjoint (⟨Im2Col(x), c⟩ = ⟨x, Col2Im(c)⟩).</summary>
public class ConvColumnsTests
{
    public static TheoryData<string> DeviceNames => TestUtil.Devices;

    [Theory]
    [MemberData(nameof(DeviceNames))]
    public void ColumnsMatchTheDefinitionAndCol2ImIsTheAdjoint(string device)
    {
        var dev = TestUtil.DeviceFor(device);
        // 4 images of 3 × 6 × 7, kernel 3, stride 2, padding 1, dilation 2; columns of images 1 and 2.
        var a = new Conv2dArgs(4, 3, 6, 7, 5, 3, 3, 2, 2, 1, 1, 2, 2);
        const int n0 = 1, images = 2;
        int ckk = a.C * a.KH * a.KW, positions = images * a.OutH * a.OutW;
        var x = TestUtil.Uniform(3, a.N * a.C * a.H * a.W);
        var c = TestUtil.Uniform(4, ckk * positions);
        double[] cols, dx;
        using (var scope = TensorScope.Begin())
        {
            var tx = Tensor.FromArray(x.Select(v => (float)v).ToArray(), new Shape(a.N, a.C, a.H, a.W), dev);
            var tc = Tensor.FromArray(c.Select(v => (float)v).ToArray(), new Shape(ckk, positions), dev);
            var tcols = Tensor.Empty(new Shape(ckk, positions), device: dev);
            var tdx = Tensor.Full(new Shape(a.N, a.C, a.H, a.W), 7, device: dev);
            dev.Backend.Im2Col(a, tx.View, n0, images, tcols.View);
            dev.Backend.Col2Im(a, tc.View, n0, images, tdx.View);
            cols = TestUtil.Values(tcols);
            dx = TestUtil.Values(tdx);
        }
        var expected = new double[ckk * positions];
        for (var row = 0; row < ckk; row++)
        {
            int ch = row / (a.KH * a.KW), kh = row / a.KW % a.KH, kw = row % a.KW;
            for (var i = 0; i < images; i++)
            {
                for (var oh = 0; oh < a.OutH; oh++)
                {
                    for (var ow = 0; ow < a.OutW; ow++)
                    {
                        int ih = oh * a.StrideH - a.PadH + kh * a.DilationH, iw = ow * a.StrideW - a.PadW + kw * a.DilationW;
                        var inside = ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
                        expected[(row * images + i) * a.OutH * a.OutW + oh * a.OutW + ow] =
                            inside ? (float)x[(((n0 + i) * a.C + ch) * a.H + ih) * a.W + iw] : 0;
                    }
                }
            }
        }
        TestUtil.AssertClose(expected, cols, 0, 0, "im2col columns");
        // Col2Im writes only the chunk's images, and is the adjoint there.
        var plane = a.C * a.H * a.W;
        Assert.All(dx.Take(n0 * plane).Concat(dx.Skip((n0 + images) * plane)), v => Assert.Equal(7, v));
        var left = expected.Zip(c, (e, v) => e * (float)v).Sum();
        var right = x.Skip(n0 * plane).Take(images * plane).Zip(dx.Skip(n0 * plane), (xv, d) => (float)xv * d).Sum();
        Assert.Equal(left, right, 1e-4);
    }
}
