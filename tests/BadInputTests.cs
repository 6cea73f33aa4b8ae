namespace Frugal.Tests;

/// <summary>Failed preconditions throw exceptions whose messages name the op and the shapes, dtypes and devices.</summary>
public class BadInputTests
{
    private static void Mentions(Exception e, params string[] parts)
    {
        foreach (var p in parts)
            Assert.True(e.Message.Contains(p, StringComparison.Ordinal), $"message \"{e.Message}\" does not mention \"{p}\"");
    }

    [Fact]
    public void Add_ShapeMismatch_NamesBothShapes()
    {
        using var a = Tensor.Zeros(new Shape(2, 3));
        using var b = Tensor.Zeros(new Shape(4, 5));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.Add(a, b)), "Add", "[2, 3]", "[4, 5]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => a * b), "Mul", "[2, 3]", "[4, 5]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.Sub(b, a)), "Sub", "[2, 3]", "[4, 5]");
    }

    [Fact]
    public void Add_DTypeMismatch_NamesBothDTypes()
    {
        using var a = Tensor.Zeros(new Shape(2, 3));
        using var b = Tensor.Zeros(new Shape(2, 3), DType.F64);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Add(a, b)), "Add", "f32", "f64", "[2, 3]");
    }

    [Fact]
    public void Add_OfIntegerTensors_NamesTheDType()
    {
        using var a = Tensor.Zeros(new Shape(2), DType.I32);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Add(a, a)), "Add", "i32", "[2]");
    }

    [Fact]
    public void Add_DeviceMismatch_NamesBothDevices()
    {
        var d1 = Device.CreateCpu("left-dev");
        var d2 = Device.CreateCpu("right-dev");
        using var a = Tensor.Zeros(new Shape(2, 3), device: d1);
        using var b = Tensor.Zeros(new Shape(2, 3), device: d2);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Add(a, b)), "Add", "left-dev", "right-dev");
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.MatMul(a, b.Transpose(0, 1))), "MatMul", "left-dev", "right-dev");
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.CopyInto(a, b)), "CopyInto", "left-dev", "right-dev");
        // Nothing was allocated by the failed ops.
        Assert.Equal(24, d1.Allocator.Stats().CurrentTotal);
        Assert.Equal(24, d2.Allocator.Stats().CurrentTotal);
    }

    [Fact]
    public void MatMul_InnerDimensionMismatch()
    {
        using var a = Tensor.Zeros(new Shape(2, 3));
        using var b = Tensor.Zeros(new Shape(4, 5));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.MatMul(a, b)), "MatMul", "[2, 3]", "[4, 5]", "3 vs 4");
        using var v = Tensor.Zeros(new Shape(3));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.MatMul(a, v)), "MatMul", "[3]");
        using var ba = Tensor.Zeros(new Shape(2, 2, 3));
        using var bb = Tensor.Zeros(new Shape(3, 3, 4));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.MatMul(ba, bb)), "MatMul", "[2]", "[3]");
    }

    [Fact]
    public void Linear_WrongInputWidth()
    {
        using var x = Tensor.Zeros(new Shape(8, 100));
        using var w = Tensor.Zeros(new Shape(10, 784));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.Linear(x, w)), "Linear", "[8, 100]", "[10, 784]", "784");
        using var xOk = Tensor.Zeros(new Shape(8, 784));
        using var badBias = Tensor.Zeros(new Shape(11));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.Linear(xOk, w, badBias)), "Linear", "[11]", "[10]");
    }

    [Fact]
    public void Conv2d_ChannelMismatch()
    {
        using var x = Tensor.Zeros(new Shape(2, 3, 8, 8));
        using var w = Tensor.Zeros(new Shape(4, 5, 3, 3));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.Conv2d(x, w)), "Conv2d", "[2, 3, 8, 8]", "[4, 5, 3, 3]");
        using var x3 = Tensor.Zeros(new Shape(3, 8, 8));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.Conv2d(x3, w)), "Conv2d", "[3, 8, 8]");
        using var big = Tensor.Zeros(new Shape(4, 3, 9, 9));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.Conv2d(x, big)), "Conv2d", "[2, 3, 8, 8]");
    }

    [Fact]
    public void CrossEntropy_TargetOutOfRange()
    {
        using var logits = Tensor.Zeros(new Shape(3, 10));
        using var targets = Tensor.FromArray(new[] { 1, 10, 2 }, 3);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.CrossEntropy(logits, targets)), "CrossEntropy", "10", "[3, 10]");
        using var negative = Tensor.FromArray(new[] { 1, -1, 2 }, 3);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.CrossEntropy(logits, negative)), "CrossEntropy", "-1");
    }

    [Fact]
    public void CrossEntropy_WrongTargetDTypeOrShape()
    {
        using var logits = Tensor.Zeros(new Shape(3, 10));
        using var floatTargets = Tensor.Zeros(new Shape(3));
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.CrossEntropy(logits, floatTargets)), "CrossEntropy", "i32", "f32", "[3]");
        using var shortTargets = Tensor.FromArray(new[] { 1, 2 }, 2);
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.CrossEntropy(logits, shortTargets)), "CrossEntropy", "[3, 10]", "[2]");
    }

    [Fact]
    public void Embedding_IndexOutOfRange()
    {
        using var weight = Tensor.Zeros(new Shape(5, 4));
        using var idx = Tensor.FromArray(new[] { 0, 5 }, 2);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Embedding(idx, weight)), "Embedding", "5", "[5, 4]");
        using var neg = Tensor.FromArray(new[] { -1 }, 1);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Embedding(neg, weight)), "Embedding", "-1");
        using var floatIdx = Tensor.Zeros(new Shape(2));
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Embedding(floatIdx, weight)), "Embedding", "i32", "f32");
    }

    [Fact]
    public void Reshape_IncompatibleSize()
    {
        using var t = Tensor.Zeros(new Shape(2, 3));
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Reshape(4, 2)), "Reshape", "[2, 3]", "[4, 2]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Reshape(4, -1)), "Reshape", "[2, 3]", "-1");
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Reshape(-1, -1)), "Reshape", "[2, 3]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Reshape(-2, -3)), "Reshape", "[2, 3]", "[-2, -3]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Reshape(-1, -2)), "Reshape", "[2, 3]", "[-1, -2]");
    }

    [Fact]
    public void Narrow_OutOfRange()
    {
        using var t = Tensor.Zeros(new Shape(4, 6));
        Mentions(Assert.ThrowsAny<ArgumentException>(() => t.Narrow(1, 4, 3)), "Narrow", "[4, 7)", "[4, 6]");
        Mentions(Assert.ThrowsAny<ArgumentException>(() => t.Narrow(0, -1, 2)), "Narrow", "[4, 6]");
        Mentions(Assert.ThrowsAny<ArgumentException>(() => t.Narrow(0, 1, -1)), "Narrow", "[4, 6]");
        Mentions(Assert.ThrowsAny<ArgumentException>(() => t.Narrow(2, 0, 1)), "[4, 6]");
    }

    [Fact]
    public void Permute_NotAPermutation()
    {
        using var t = Tensor.Zeros(new Shape(2, 3, 4));
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Permute(0, 0, 1)), "Permute", "[0, 0, 1]", "[2, 3, 4]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Permute(0, 1)), "Permute", "[0, 1]", "[2, 3, 4]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Permute(0, 1, 3)), "Permute", "[0, 1, 3]");
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Permute(-1, 0, 1)), "Permute", "[-1, 0, 1]");
    }

    [Fact]
    public void Transpose_AxisOutOfRange()
    {
        using var t = Tensor.Zeros(new Shape(2, 3));
        Mentions(Assert.ThrowsAny<ArgumentException>(() => t.Transpose(0, 2)), "[2, 3]", "2");
    }

    [Fact]
    public void Expand_NotABroadcast()
    {
        using var t = Tensor.Zeros(new Shape(3, 2));
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Expand(3, 4)), "Expand", "[3, 2]", "[3, 4]");
        // Expanding may not shrink: [3, 2] -> [1, 2] broadcasts back to [3, 2], not the target.
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Expand(1, 2)), "Expand", "[3, 2]", "[1, 2]");
    }

    [Fact]
    public void Item_OnMultiElementTensor()
    {
        using var t = Tensor.Zeros(new Shape(2, 2));
        Mentions(Assert.Throws<ShapeMismatchException>(() => t.Item()), "Item", "[2, 2]", "4");
        using var empty = Tensor.Zeros(new Shape(0));
        Mentions(Assert.Throws<ShapeMismatchException>(() => empty.Item()), "Item", "[0]");
    }

    [Fact]
    public void ToArray_WrongElementType()
    {
        using var t = Tensor.Zeros(new Shape(2), DType.F64);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => t.ToArray<float>()), "ToArray", "Single", "f64", "[2]");
        using var i = Tensor.Zeros(new Shape(3), DType.I32);
        Mentions(Assert.ThrowsAny<ArgumentException>(() => i.ToArray<byte>()), "ToArray", "Byte", "i32");
    }

    [Fact]
    public void FromArray_WrongElementCount()
    {
        Mentions(Assert.Throws<ShapeMismatchException>(() => Tensor.FromArray(new float[] { 1, 2, 3 }, 2, 2)), "FromArray", "3", "[2, 2]", "f32");
    }

    [Fact]
    public void CopyInto_ShapeMismatch()
    {
        using var dst = Tensor.Zeros(new Shape(2, 3));
        using var src = Tensor.Zeros(new Shape(3, 2));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.CopyInto(dst, src)), "CopyInto", "[2, 3]", "[3, 2]");
    }

    [Fact]
    public void AddInPlace_DestinationMustHoldTheBroadcast()
    {
        using var dst = Tensor.Zeros(new Shape(3));
        using var src = Tensor.Zeros(new Shape(2, 3));
        Mentions(Assert.Throws<ShapeMismatchException>(() => F.AddInPlace(dst, src)), "AddInPlace", "[3]", "[2, 3]");
    }

    [Fact]
    public void Where_ConditionMustBeU8()
    {
        using var c = Tensor.Zeros(new Shape(2));
        using var a = Tensor.Zeros(new Shape(2));
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Where(c, a, a)), "Where", "u8", "f32");
    }

    [Fact]
    public void Reduce_AxisOutOfRange()
    {
        using var t = Tensor.Zeros(new Shape(2, 3));
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Sum(t, [2])), "[2, 3]", "2");
    }

    [Fact]
    public void Dropout_InvalidProbability()
    {
        using var t = Tensor.Zeros(new Shape(2));
        Mentions(Assert.ThrowsAny<ArgumentException>(() => F.Dropout(t, 1.0, training: true)), "Dropout", "1");
    }

    [Fact]
    public void FailedOpsLeakNothing()
    {
        var device = Device.CreateCpu("failures");
        var start = Tensor.LiveCount;
        using var a = Tensor.Zeros(new Shape(2, 3), device: device);
        using var b = Tensor.Zeros(new Shape(4, 5), device: device);
        using var idx = Tensor.FromArray(new[] { 0, 99 }, new Shape(2), device);
        var before = device.Allocator.Stats().CurrentTotal;
        Assert.ThrowsAny<ArgumentException>(() => F.Add(a, b));
        Assert.ThrowsAny<ArgumentException>(() => F.MatMul(a, b));
        Assert.ThrowsAny<ArgumentException>(() => F.Linear(a, b));
        Assert.ThrowsAny<ArgumentException>(() => a.Reshape(7));
        Assert.ThrowsAny<ArgumentException>(() => F.Embedding(idx, b));
        Assert.ThrowsAny<ArgumentException>(() => F.CrossEntropy(b, idx));
        Assert.Equal(before, device.Allocator.Stats().CurrentTotal);
        Assert.Equal(start + 3, Tensor.LiveCount);
    }
}
