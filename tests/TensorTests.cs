using Frugal.Memory;

namespace Frugal.Tests;

/// <summary>Tensors, dtypes, shapes, views and conversions.</summary>
public class TensorTests
{
    // ---- dtypes ----

    [Theory]
    [InlineData(DType.F32, 4, "f32")]
    [InlineData(DType.F64, 8, "f64")]
    [InlineData(DType.F16, 2, "f16")]
    [InlineData(DType.BF16, 2, "bf16")]
    [InlineData(DType.I8, 1, "i8")]
    [InlineData(DType.U8, 1, "u8")]
    [InlineData(DType.I32, 4, "i32")]
    public void DType_SizeOfAndName(DType dtype, int size, string name)
    {
        Assert.Equal(size, dtype.SizeOf());
        Assert.Equal(name, dtype.Name());
    }

    [Fact]
    public void DType_Classification()
    {
        Assert.True(DType.F32.IsComputeType());
        Assert.True(DType.F64.IsComputeType());
        Assert.False(DType.BF16.IsComputeType());
        Assert.False(DType.I32.IsComputeType());
        Assert.True(DType.F16.IsFloat());
        Assert.True(DType.BF16.IsFloat());
        Assert.False(DType.U8.IsFloat());
        Assert.False(DType.I8.IsFloat());
    }

    [Fact]
    public void DType_UnknownValueThrows()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ((DType)200).SizeOf());
        Assert.Throws<ArgumentOutOfRangeException>(() => ((DType)200).Name());
    }

    [Fact]
    public void DTypeOf_MapsElementTypes()
    {
        Assert.Equal(DType.F32, Tensor.DTypeOf<float>());
        Assert.Equal(DType.F64, Tensor.DTypeOf<double>());
        Assert.Equal(DType.F16, Tensor.DTypeOf<Half>());
        Assert.Equal(DType.BF16, Tensor.DTypeOf<BFloat16>());
        Assert.Equal(DType.I8, Tensor.DTypeOf<sbyte>());
        Assert.Equal(DType.U8, Tensor.DTypeOf<byte>());
        Assert.Equal(DType.I32, Tensor.DTypeOf<int>());
        var e = Assert.Throws<NotSupportedException>(() => Tensor.DTypeOf<long>());
        Assert.Contains("Int64", e.Message, StringComparison.Ordinal);
    }

    // ---- FromArray / ToArray ----

    private static void RoundTrip<T>(T[] data) where T : unmanaged
    {
        var device = Device.CreateCpu("roundtrip");
        using var t = Tensor.FromArray<T>(data.AsSpan(), new Shape(2, data.Length / 2), device);
        Assert.Equal(Tensor.DTypeOf<T>(), t.DType);
        Assert.Equal(new Shape(2, data.Length / 2), t.Shape);
        Assert.Same(device, t.Device);
        Assert.Equal(data, t.ToArray<T>());
        Assert.Equal(data.Length * Tensor.DTypeOf<T>().SizeOf(), device.Allocator.Current(MemoryCategory.Other));
    }

    [Fact]
    public void FromArray_ToArray_RoundTripsEveryDType()
    {
        RoundTrip(new[] { 1.5f, -2.25f, float.MaxValue, float.Epsilon, 0f, -0f });
        RoundTrip(new[] { 1.5, -2.25, double.MaxValue, double.Epsilon, Math.PI, -1e-300 });
        RoundTrip(new[] { (Half)1.5, (Half)(-2.25), Half.MaxValue, Half.Epsilon, (Half)0.1, (Half)(-65504) });
        RoundTrip(new[] { (BFloat16)1.5f, (BFloat16)(-2.25f), (BFloat16)3e38f, (BFloat16)1e-30f, (BFloat16)0.1f, (BFloat16)(-7f) });
        RoundTrip(new sbyte[] { -128, -1, 0, 1, 127, 42 });
        RoundTrip(new byte[] { 0, 1, 127, 128, 255, 42 });
        RoundTrip(new[] { int.MinValue, -1, 0, 1, int.MaxValue, 123456789 });
    }

    [Fact]
    public void FromArray_ParamsShapeOverload()
    {
        using var t = Tensor.FromArray(new[] { 1f, 2, 3, 4, 5, 6 }, 3, 2);
        Assert.Equal(new Shape(3, 2), t.Shape);
        Assert.Equal(new[] { 2, 1 }, t.Strides);
        Assert.True(t.IsContiguous);
        Assert.Equal(new[] { 1f, 2, 3, 4, 5, 6 }, t.ToArray<float>());
    }

    [Fact]
    public void Creation_FullZerosOnesScalar()
    {
        using var z = Tensor.Zeros(new Shape(2, 3));
        using var o = Tensor.Ones(new Shape(4), DType.F64);
        using var f = Tensor.Full(new Shape(2), 7, DType.I32);
        using var s = Tensor.Scalar(2.5);
        Assert.All(z.ToArray<float>(), v => Assert.Equal(0f, v));
        Assert.All(o.ToArray<double>(), v => Assert.Equal(1.0, v));
        Assert.Equal(new[] { 7, 7 }, f.ToArray<int>());
        Assert.Equal(0, s.Rank);
        Assert.Equal(1, s.Numel);
        Assert.Equal(2.5, s.Item());
        Assert.Equal(DType.F32, z.DType);
        Assert.True(z.IsLeaf);
        Assert.False(z.RequiresGrad);
    }

    // ---- Shape ----

    [Fact]
    public void Shape_Basics()
    {
        var s = new Shape(2, 3, 4);
        Assert.Equal(3, s.Rank);
        Assert.Equal(24, s.Numel);
        Assert.Equal(4, s[-1]);
        Assert.Equal(2, s[0]);
        Assert.Equal(new[] { 12, 4, 1 }, s.ContiguousStrides());
        Assert.Equal("[2, 3, 4]", s.ToString());
        Assert.Equal(new Shape(2, 3, 4), s);
        Assert.True(s == new Shape([2, 3, 4]));
        Assert.True(s != new Shape(2, 4, 3));
        Assert.Equal(s.GetHashCode(), new Shape(2, 3, 4).GetHashCode());
        Assert.Equal(1, new Shape().Numel);
        Assert.Equal(0, new Shape().Rank);
        Assert.Equal("[]", new Shape().ToString());
        Assert.Equal(0, new Shape(3, 0, 2).Numel);
        Assert.Equal(new Shape(), default);
        Assert.Equal(new[] { 2, 3, 4 }, s.ToArray());
        Assert.Equal(new[] { 2, 3, 4 }, s.ToList());
    }

    [Fact]
    public void Shape_IsImmutable()
    {
        var dims = new[] { 2, 3 };
        var s = new Shape(dims);
        dims[0] = 99;
        Assert.Equal(2, s[0]);
        var copy = s.ToArray();
        copy[1] = 99;
        Assert.Equal(3, s[1]);
    }

    [Fact]
    public void Shape_NegativeDimensionThrowsNamingShape()
    {
        var e = Assert.Throws<ArgumentException>(() => new Shape(2, -1, 3));
        Assert.Contains("[2, -1, 3]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Shape_Normalize()
    {
        var s = new Shape(2, 3, 4);
        Assert.Equal(0, s.Normalize(0));
        Assert.Equal(2, s.Normalize(2));
        Assert.Equal(2, s.Normalize(-1));
        Assert.Equal(0, s.Normalize(-3));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => s.Normalize(3));
        Assert.Contains("axis 3", e.Message, StringComparison.Ordinal);
        Assert.Contains("[2, 3, 4]", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => s.Normalize(-4));
        Assert.Contains("axis -4", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Shape().Normalize(0));
    }

    [Theory]
    [InlineData(new[] { 2, 3 }, new[] { 2, 3 }, new[] { 2, 3 })]
    [InlineData(new[] { 2, 1, 3 }, new[] { 4, 3 }, new[] { 2, 4, 3 })]
    [InlineData(new[] { 1 }, new[] { 5, 1, 7 }, new[] { 5, 1, 7 })]
    [InlineData(new int[0], new[] { 2, 3 }, new[] { 2, 3 })]
    [InlineData(new[] { 3, 1 }, new[] { 1, 4 }, new[] { 3, 4 })]
    [InlineData(new[] { 0, 1 }, new[] { 1, 5 }, new[] { 0, 5 })]
    [InlineData(new[] { 1, 0 }, new[] { 3, 1 }, new[] { 3, 0 })]
    public void Shape_BroadcastRules(int[] a, int[] b, int[] expected)
    {
        Assert.Equal(new Shape(expected), Shape.Broadcast(new Shape(a), new Shape(b), "Test"));
        Assert.Equal(new Shape(expected), Shape.Broadcast(new Shape(b), new Shape(a), "Test"));
    }

    [Fact]
    public void Shape_BroadcastMismatchNamesOpShapesAndDimension()
    {
        var e = Assert.Throws<ShapeMismatchException>(() => Shape.Broadcast(new Shape(2, 3), new Shape(4, 3), "MyOp"));
        Assert.Contains("MyOp", e.Message, StringComparison.Ordinal);
        Assert.Contains("[2, 3]", e.Message, StringComparison.Ordinal);
        Assert.Contains("[4, 3]", e.Message, StringComparison.Ordinal);
        Assert.Contains("dimension 0", e.Message, StringComparison.Ordinal);
        Assert.Contains("2 vs 4", e.Message, StringComparison.Ordinal);
        // Trailing dims are aligned: [3] vs [3, 2] fails at the last dimension.
        e = Assert.Throws<ShapeMismatchException>(() => Shape.Broadcast(new Shape(3), new Shape(3, 2), "Op2"));
        Assert.Contains("3 vs 2", e.Message, StringComparison.Ordinal);
        // 0 is not 1: [0] does not broadcast with [2].
        Assert.Throws<ShapeMismatchException>(() => Shape.Broadcast(new Shape(0), new Shape(2), "Op3"));
    }

    // ---- views ----

    [Fact]
    public void Narrow_ViewSharesMemory_FillIsVisibleThroughBase()
    {
        using var t = Tensor.Zeros(new Shape(4, 3));
        using var rows = t.Narrow(0, 1, 2);
        Assert.Same(t.Buffer, rows.Buffer);
        Assert.True(rows.IsContiguous);
        F.FillInPlace(rows, 5);
        Assert.Equal(new float[] { 0, 0, 0, 5, 5, 5, 5, 5, 5, 0, 0, 0 }, t.ToArray<float>());
    }

    [Fact]
    public void Narrow_ColumnView_CopyIntoWritesThroughToBase()
    {
        using var t = Tensor.FromArray(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), 3, 4);
        using var cols = t.Narrow(1, 1, 2);
        Assert.False(cols.IsContiguous);
        Assert.Equal(new Shape(3, 2), cols.Shape);
        Assert.Equal(new[] { 4, 1 }, cols.Strides);
        Assert.Equal(1, cols.Offset);
        Assert.Equal(new float[] { 1, 2, 5, 6, 9, 10 }, cols.ToArray<float>());
        using var src = Tensor.FromArray(new float[] { -1, -2, -3, -4, -5, -6 }, 3, 2);
        F.CopyInto(cols, src);
        Assert.Equal(new float[] { 0, -1, -2, 3, 4, -3, -4, 7, 8, -5, -6, 11 }, t.ToArray<float>());
        // And a write to the base shows in the view.
        F.FillInPlace(t, 9);
        Assert.All(cols.ToArray<float>(), v => Assert.Equal(9f, v));
    }

    [Fact]
    public void ViewOfView_OffsetsCompose()
    {
        using var t = Tensor.FromArray(Enumerable.Range(0, 24).Select(i => (double)i).ToArray(), 2, 3, 4);
        using var a = t.Narrow(2, 1, 3);   // [2, 3, 3], offset 1
        using var b = a.Narrow(1, 2, 1);   // [2, 1, 3], offset 1 + 2*4 = 9
        Assert.Equal(new Shape(2, 1, 3), b.Shape);
        Assert.Equal(9, b.Offset);
        Assert.Equal(new double[] { 9, 10, 11, 21, 22, 23 }, b.ToArray<double>());
        F.FillInPlace(b, -1);
        var all = t.ToArray<double>();
        Assert.Equal(-1, all[9]);
        Assert.Equal(-1, all[23]);
        Assert.Equal(8, all[8]);
        Assert.Equal(12, all[12]);
    }

    [Fact]
    public void Transpose_SwapsShapeAndStrides()
    {
        using var t = Tensor.FromArray(Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), 2, 3, 4);
        using var tt = t.Transpose(0, 2);
        Assert.Equal(new Shape(4, 3, 2), tt.Shape);
        Assert.Equal(new[] { 1, 4, 12 }, tt.Strides);
        Assert.Same(t.Buffer, tt.Buffer);
        Assert.False(tt.IsContiguous);
        var v = tt.ToArray<float>();
        // tt[i, j, k] = t[k, j, i] = 12k + 4j + i
        Assert.Equal(12 * 1 + 4 * 2 + 3, v[(3 * 3 + 2) * 2 + 1]);
        using var neg = t.Transpose(-1, -2);
        Assert.Equal(new Shape(2, 4, 3), neg.Shape);
        Assert.Equal(new[] { 12, 1, 4 }, neg.Strides);
    }

    [Fact]
    public void Permute_ReordersShapeAndStrides()
    {
        using var t = Tensor.FromArray(Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), 2, 3, 4);
        using var p = t.Permute(2, 0, 1);
        Assert.Equal(new Shape(4, 2, 3), p.Shape);
        Assert.Equal(new[] { 1, 12, 4 }, p.Strides);
        using var c = p.Contiguous();
        Assert.True(c.IsContiguous);
        Assert.NotSame(t.Buffer, c.Buffer);
        Assert.Equal(new[] { 6, 3, 1 }, c.Strides);
        var v = c.ToArray<float>();
        for (var i = 0; i < 4; i++)
        {
            for (var j = 0; j < 2; j++)
            {
                for (var k = 0; k < 3; k++)
                    Assert.Equal(12 * j + 4 * k + i, v[(i * 2 + j) * 3 + k]);
            }
        }
        using var identity = t.Permute(0, 1, 2);
        Assert.Equal(t.Strides, identity.Strides);
    }

    [Fact]
    public void Reshape_ContiguousIsAView_NonContiguousCopies()
    {
        using var t = Tensor.FromArray(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), 3, 4);
        using var r = t.Reshape(2, -1);
        Assert.Equal(new Shape(2, 6), r.Shape);
        Assert.Equal(new[] { 6, 1 }, r.Strides);
        Assert.Same(t.Buffer, r.Buffer);
        using var r0 = t.Reshape(12);
        Assert.Equal(new Shape(12), r0.Shape);

        using var tr = t.Transpose(0, 1);  // [4, 3], not contiguous
        using var flat = tr.Reshape(-1);
        Assert.NotSame(t.Buffer, flat.Buffer);
        Assert.Equal(new float[] { 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11 }, flat.ToArray<float>());

        using var one = Tensor.Scalar(3);
        using var r1 = one.Reshape(1, 1, 1);
        Assert.Equal(new Shape(1, 1, 1), r1.Shape);
        using var back = r1.Reshape();
        Assert.Equal(0, back.Rank);
    }

    [Fact]
    public void Contiguous_OfContiguousTensorIsAnAlias()
    {
        using var t = Tensor.Ones(new Shape(2, 3));
        using var c = t.Contiguous();
        Assert.Same(t.Buffer, c.Buffer);
        Assert.NotSame(t, c);
    }

    [Fact]
    public void Expand_UsesZeroStrides()
    {
        using var t = Tensor.FromArray(new float[] { 1, 2, 3 }, 3, 1);
        using var e = t.Expand(2, 3, 4);
        Assert.Equal(new Shape(2, 3, 4), e.Shape);
        Assert.Equal(new[] { 0, 1, 0 }, e.Strides);
        Assert.Same(t.Buffer, e.Buffer);
        var v = e.ToArray<float>();
        Assert.Equal(24, v.Length);
        for (var i = 0; i < 24; i++)
            Assert.Equal(1 + (i / 4) % 3, v[i]);
    }

    // ---- Item ----

    [Fact]
    public void Item_ReadsTheSingleElementOfAnyDType()
    {
        using var a = Tensor.Scalar(3.25);
        using var b = Tensor.FromArray(new[] { 7 }, 1, 1);
        using var c = Tensor.Scalar(-1.5, DType.F64);
        using var d = Tensor.FromArray(new[] { (Half)0.5 }, 1);
        using var big = Tensor.FromArray(new float[] { 1, 2, 3 }, 3);
        using var one = big.Narrow(0, 2, 1);
        Assert.Equal(3.25, a.Item());
        Assert.Equal(7.0, b.Item());
        Assert.Equal(-1.5, c.Item());
        Assert.Equal(0.5, d.Item());
        Assert.Equal(3.0, one.Item());
    }

    // ---- dtype conversions ----

    [Fact]
    public void To_FloatToIntRoundsAndSaturates()
    {
        using var t = Tensor.FromArray(new[] { 1.4, 1.6, -1.6, 300.0, -300.0, 2.5 }, 6);
        using var i32 = t.To(DType.I32);
        using var u8 = t.To(DType.U8);
        using var i8 = t.To(DType.I8);
        Assert.Equal(new[] { 1, 2, -2, 300, -300, 2 }, i32.ToArray<int>());
        Assert.Equal(new byte[] { 1, 2, 0, 255, 0, 2 }, u8.ToArray<byte>());
        Assert.Equal(new sbyte[] { 1, 2, -2, 127, -128, 2 }, i8.ToArray<sbyte>());
    }

    [Fact]
    public void To_IntToFloatIsExact()
    {
        using var t = Tensor.FromArray(new[] { -5, 0, 16777216, 3 }, 4);
        using var f = t.To(DType.F64);
        Assert.Equal(new[] { -5.0, 0, 16777216, 3 }, f.ToArray<double>());
        using var u = Tensor.FromArray(new byte[] { 0, 255 }, 2);
        using var uf = u.To(DType.F32);
        Assert.Equal(new[] { 0f, 255f }, uf.ToArray<float>());
    }

    [Fact]
    public void To_BF16_RoundsToNearestEven()
    {
        var ulp = MathF.Pow(2, -7);  // bf16 spacing at 1
        var inputs = new[]
        {
            1f,
            1 + ulp / 2,             // tie -> even (1)
            1 + ulp * 1.5f,          // tie -> even (1 + 2 ulp)
            1 + ulp / 2 + ulp / 64,  // just above the tie -> up
            1 + ulp / 2 - ulp / 64,  // just below the tie -> down
            -(1 + ulp * 1.5f),
            float.PositiveInfinity,
            3.4e38f,                 // above the largest bf16 (3.3895e38) by more than half an ulp -> inf
        };
        var expected = new[] { 1f, 1f, 1 + 2 * ulp, 1 + ulp, 1f, -(1 + 2 * ulp), float.PositiveInfinity, float.PositiveInfinity };
        using var t = Tensor.FromArray(inputs, inputs.Length);
        using var b = t.To(DType.BF16);
        Assert.Equal(DType.BF16, b.DType);
        using var back = b.To(DType.F32);
        Assert.Equal(expected, back.ToArray<float>());
        Assert.Equal(expected, b.ToArray<BFloat16>().Select(x => (float)x).ToArray());
    }

    [Fact]
    public void To_BF16_NaNStaysNaN()
    {
        using var t = Tensor.FromArray(new[] { float.NaN, -float.NaN }, 2);
        using var b = t.To(DType.BF16);
        using var back = b.To(DType.F32);
        Assert.All(back.ToArray<float>(), v => Assert.True(float.IsNaN(v)));
    }

    [Fact]
    public void To_F16_RoundsToNearestEvenAndOverflowsToInfinity()
    {
        var ulp = Math.Pow(2, -10);  // f16 spacing at 1
        var inputs = new[] { 1, 1 + ulp / 2, 1 + ulp * 1.5, 1 + ulp / 2 + ulp / 64, 65504, 65520, 1e6, -1e6, 6e-8 };
        var expected = new[] { 1, 1, 1 + 2 * ulp, 1 + ulp, 65504, double.PositiveInfinity, double.PositiveInfinity, double.NegativeInfinity, Math.Pow(2, -24) };
        using var t = Tensor.FromArray(inputs, inputs.Length);
        using var h = t.To(DType.F16);
        using var back = h.To(DType.F64);
        Assert.Equal(expected, back.ToArray<double>());
        using var f = Tensor.FromArray(inputs.Select(x => (float)x).ToArray(), inputs.Length);
        using var hf = f.To(DType.F16);
        Assert.Equal(expected.Select(x => (Half)x).ToArray(), hf.ToArray<Half>());
    }

    [Fact]
    public void To_F64ToBF16_RoundsOnce()
    {
        // 1 + 2^-8 + 2^-40 is just above the bf16 tie between 1 and 1 + 2^-7: it must round up. Going through
        // f32 first would round it to the tie 1 + 2^-8 and then (ties to even) down to 1.
        var v = 1 + Math.Pow(2, -8) + Math.Pow(2, -40);
        var w = -(1 + 3 * Math.Pow(2, -8) - Math.Pow(2, -40));  // just below the tie 1 + 1.5·2^-7: rounds to 1 + 2^-7
        using var t = Tensor.FromArray(new[] { v, w }, 2);
        using var b = t.To(DType.BF16);
        using var back = b.To(DType.F64);
        Assert.Equal(new[] { 1 + Math.Pow(2, -7), -(1 + Math.Pow(2, -7)) }, back.ToArray<double>());
    }

    [Fact]
    public void BFloat16_FromDouble_MatchesCorrectlyRoundedReference()
    {
        // Reference for normal numbers: scale to an 8-bit significand in [128, 256), round half to even, scale back.
        static double Reference(double v)
        {
            var e = Math.ILogB(v);
            var r = Math.Round(Math.ScaleB(Math.Abs(v), 7 - e), MidpointRounding.ToEven);
            return Math.CopySign(Math.ScaleB(r, e - 7), v);
        }
        var rng = new Random(17);
        for (var k = 0; k < 20000; k++)
        {
            // Values on, just above and just below the ties between bf16 neighbours, and random ones.
            var e = rng.Next(-100, 100);
            var m = 128 + rng.Next(128);
            var tie = Math.ScaleB(m + 0.5, e);
            var v = (k % 4) switch
            {
                0 => tie,
                1 => tie + Math.ScaleB(1, e - 30),
                2 => tie - Math.ScaleB(1, e - 30),
                _ => Math.ScaleB(1 + rng.NextDouble(), e),
            };
            if (rng.Next(2) == 0)
                v = -v;
            Assert.Equal(Reference(v), (double)(float)(BFloat16)v);
        }
        Assert.True(float.IsNaN((float)(BFloat16)double.NaN));
        Assert.Equal(float.NegativeInfinity, (float)(BFloat16)double.NegativeInfinity);
        Assert.Equal(float.PositiveInfinity, (float)(BFloat16)1e300);
        Assert.Equal(0x8000, ((BFloat16)(-1e-300)).Bits);
    }

    [Fact]
    public void BFloat16_Struct()
    {
        var one = (BFloat16)1f;
        Assert.Equal(0x3F80, one.Bits);
        Assert.Equal(1f, (float)one);
        Assert.Equal(one, BFloat16.FromBits(0x3F80));
        Assert.True(one == BFloat16.FromBits(0x3F80));
        Assert.True(one != (BFloat16)2f);
        Assert.Equal("1", one.ToString());
        Assert.True(float.IsNaN((float)(BFloat16)float.NaN));
        Assert.Equal(0x8000, ((BFloat16)(-0f)).Bits);
    }

    [Fact]
    public void To_SameDTypeCopies()
    {
        using var t = Tensor.FromArray(new float[] { 1, 2 }, 2);
        using var c = t.To(DType.F32);
        Assert.NotSame(t.Buffer, c.Buffer);
        F.FillInPlace(c, 0);
        Assert.Equal(new float[] { 1, 2 }, t.ToArray<float>());
    }

    [Fact]
    public void To_OfANonContiguousViewConvertsLogicalOrder()
    {
        using var t = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        using var tr = t.Transpose(0, 1);
        using var d = tr.To(DType.F64);
        Assert.Equal(new double[] { 1, 4, 2, 5, 3, 6 }, d.ToArray<double>());
    }

    // ---- random numbers ----

    [Fact]
    public void Uniform_AndNormal_AreDeterministicInTheSeed()
    {
        using var a = Tensor.Uniform(new Shape(1000), -2, 3, seed: 42);
        using var b = Tensor.Uniform(new Shape(1000), -2, 3, seed: 42);
        using var c = Tensor.Uniform(new Shape(1000), -2, 3, seed: 43);
        var va = a.ToArray<float>();
        Assert.Equal(va, b.ToArray<float>());
        Assert.NotEqual(va, c.ToArray<float>());
        Assert.All(va, v => Assert.InRange(v, -2f, 3f));
        Assert.InRange(va.Average(), 0.3, 0.7);

        using var n1 = Tensor.Normal(new Shape(4000), 1, 2, seed: 7, DType.F64);
        using var n2 = Tensor.Normal(new Shape(4000), 1, 2, seed: 7, DType.F64);
        var vn = n1.ToArray<double>();
        Assert.Equal(vn, n2.ToArray<double>());
        var mean = vn.Average();
        var std = Math.Sqrt(vn.Select(x => (x - mean) * (x - mean)).Average());
        Assert.InRange(mean, 0.85, 1.15);
        Assert.InRange(std, 1.85, 2.15);
    }

    [Fact]
    public void Uniform_F32AndF64DrawTheSameStream()
    {
        using var a = Tensor.Uniform(new Shape(64), 0, 1, seed: 5);
        using var b = Tensor.Uniform(new Shape(64), 0, 1, seed: 5, DType.F64);
        var fa = a.ToArray<float>();
        var fb = b.ToArray<double>();
        for (var i = 0; i < fa.Length; i++)
            Assert.Equal((float)fb[i], fa[i]);
    }

    [Fact]
    public void Rng_DropoutMasksDependOnSeedAndDrawOrder()
    {
        var saved = Rng.State;
        try
        {
            using var x = Tensor.Ones(new Shape(256));
            Rng.ManualSeed(11);
            Assert.Equal((11UL, 0UL), Rng.State);
            using var d1 = F.Dropout(x, 0.5, training: true);
            Assert.Equal((11UL, 256UL), Rng.State);
            using var d2 = F.Dropout(x, 0.5, training: true);
            Rng.ManualSeed(11);
            using var e1 = F.Dropout(x, 0.5, training: true);
            var v1 = d1.ToArray<float>();
            Assert.Equal(v1, e1.ToArray<float>());
            Assert.NotEqual(v1, d2.ToArray<float>());
            Assert.All(v1, v => Assert.True(v is 0f or 2f));
            Assert.InRange(v1.Count(v => v == 0), 90, 166);

            // Rewinding the state replays the second draw.
            Rng.State = (11, 256);
            using var e2 = F.Dropout(x, 0.5, training: true);
            Assert.Equal(d2.ToArray<float>(), e2.ToArray<float>());

            // Not training: identity, no numbers drawn.
            var before = Rng.State;
            using var id = F.Dropout(x, 0.5, training: false);
            Assert.Equal(before, Rng.State);
            Assert.All(id.ToArray<float>(), v => Assert.Equal(1f, v));
        }
        finally
        {
            Rng.State = saved;
        }
    }

    // ---- misc ----

    [Fact]
    public void Describe_NamesShapeDTypeDeviceAndName()
    {
        var device = Device.CreateCpu("dev7");
        using var t = Tensor.Zeros(new Shape(2, 3), DType.F64, device);
        Assert.Equal("[2, 3] f64 dev7", t.Describe());
        t.Name = "fc1.weight";
        Assert.Equal("fc1.weight [2, 3] f64 dev7", t.Describe());
        t.RequiresGrad = true;
        Assert.Contains("requires_grad", t.ToString(), StringComparison.Ordinal);
        Assert.Equal("dev7", device.ToString());
        Assert.Equal(DeviceKind.Cpu, device.Kind);
    }

    [Fact]
    public void CreateCpu_GivesIsolatedAllocators()
    {
        var d1 = Device.CreateCpu("a");
        var d2 = Device.CreateCpu("b");
        Assert.NotSame(d1.Allocator, d2.Allocator);
        using var t = Tensor.Zeros(new Shape(10), device: d1);
        Assert.Equal(40, d1.Allocator.Stats().CurrentTotal);
        Assert.Equal(0, d2.Allocator.Stats().CurrentTotal);
        using var u = t.Add(1);
        Assert.Same(d1, u.Device);
        Assert.Equal(80, d1.Allocator.Stats().CurrentTotal);
    }
}
