using Frugal.Memory;

namespace Frugal.Tests;

/// <summary>Tensor lifetime: scopes, disposal, leaks, and the mechanics of autograd's graph lifetime.</summary>
public class LifetimeTests
{
    private static Tensor Param(Device device, Shape shape, ulong seed, string name)
    {
        var t = Tensor.Uniform(shape, -0.5, 0.5, seed, device: device, category: MemoryCategory.Parameter, owner: name);
        t.Name = name;
        t.RequiresGrad = true;
        return t.DetachFromScope();
    }

    // ---- TensorScope ----

    [Fact]
    public void Scope_DisposesTemporaries()
    {
        var start = Tensor.LiveCount;
        Tensor a, b, c;
        using (var scope = TensorScope.Begin())
        {
            Assert.Same(scope, TensorScope.Current);
            a = Tensor.Ones(new Shape(3));
            b = a.Mul(2);
            c = b + a;
            Assert.Equal(3, scope.Count);
            Assert.Equal(start + 3, Tensor.LiveCount);
        }
        Assert.True(a.IsDisposed);
        Assert.True(b.IsDisposed);
        Assert.True(c.IsDisposed);
        Assert.Equal(start, Tensor.LiveCount);
        Assert.Null(TensorScope.Current);
    }

    [Fact]
    public void Scope_KeepAndDetachFromScope_SurviveTheScope()
    {
        var start = Tensor.LiveCount;
        Tensor kept, detached, dropped;
        using (var scope = TensorScope.Begin())
        {
            kept = scope.Keep(Tensor.Ones(new Shape(2)));
            detached = Tensor.Zeros(new Shape(2)).DetachFromScope();
            dropped = Tensor.Zeros(new Shape(2));
            Assert.Equal(1, scope.Count);
        }
        Assert.False(kept.IsDisposed);
        Assert.False(detached.IsDisposed);
        Assert.True(dropped.IsDisposed);
        Assert.Equal(new float[] { 1, 1 }, kept.ToArray<float>());
        kept.Dispose();
        detached.Dispose();
        Assert.Equal(start, Tensor.LiveCount);
    }

    [Fact]
    public void Scope_ExplicitlyDisposedTensorIsNotDisposedTwice()
    {
        var device = Device.CreateCpu("scope-explicit");
        var start = Tensor.LiveCount;
        using (var scope = TensorScope.Begin())
        {
            var a = Tensor.Ones(new Shape(16), device: device);
            a.Dispose();
            Assert.Equal(0, scope.Count);
        }
        Assert.Equal(start, Tensor.LiveCount);
        Assert.Equal(0, device.Allocator.Stats().CurrentTotal);
    }

    [Fact]
    public void Scope_NestedScopes_MoveToOuter()
    {
        var start = Tensor.LiveCount;
        Tensor inner, moved, outerT, escaped;
        using (var outer = TensorScope.Begin())
        {
            outerT = Tensor.Ones(new Shape(1));
            using (var nested = TensorScope.Begin())
            {
                Assert.Same(outer, nested.Parent);
                Assert.Same(nested, TensorScope.Current);
                inner = Tensor.Ones(new Shape(1));
                moved = Tensor.Ones(new Shape(1)).MoveToOuter();
                Assert.Equal(1, nested.Count);
                Assert.Equal(2, outer.Count);
            }
            Assert.Same(outer, TensorScope.Current);
            Assert.True(inner.IsDisposed);
            Assert.False(moved.IsDisposed);
            Assert.False(outerT.IsDisposed);
            // MoveToOuter from the outermost scope leaves the tensor in no scope at all.
            escaped = Tensor.Ones(new Shape(1)).MoveToOuter();
        }
        Assert.True(moved.IsDisposed);
        Assert.True(outerT.IsDisposed);
        Assert.False(escaped.IsDisposed);
        escaped.Dispose();
        Assert.Equal(start, Tensor.LiveCount);
    }

    [Fact]
    public void Scope_OutOfOrderDisposeThrows_AndInOrderDisposeStillWorks()
    {
        var start = Tensor.LiveCount;
        var outer = TensorScope.Begin();
        var a = Tensor.Ones(new Shape(1));
        var inner = TensorScope.Begin();
        var b = Tensor.Ones(new Shape(1));
        var e = Assert.Throws<InvalidOperationException>(outer.Dispose);
        Assert.Contains("out of order", e.Message, StringComparison.Ordinal);
        // The failed dispose changed nothing: the inner scope is still current, nothing was disposed.
        Assert.Same(inner, TensorScope.Current);
        Assert.False(a.IsDisposed);
        inner.Dispose();
        Assert.True(b.IsDisposed);
        Assert.Same(outer, TensorScope.Current);
        outer.Dispose();
        Assert.True(a.IsDisposed);
        Assert.Null(TensorScope.Current);
        Assert.Equal(start, Tensor.LiveCount);
    }

    [Fact]
    public void Scope_DisposeIsIdempotent()
    {
        var scope = TensorScope.Begin();
        scope.Dispose();
        scope.Dispose();
        Assert.Null(TensorScope.Current);
    }

    // ---- disposal ----

    [Fact]
    public void Dispose_IsIdempotentAndCountsOnce()
    {
        var start = Tensor.LiveCount;
        var t = Tensor.Ones(new Shape(2));
        Assert.Equal(start + 1, Tensor.LiveCount);
        t.Dispose();
        t.Dispose();
        Assert.Equal(start, Tensor.LiveCount);
    }

    [Fact]
    public void UseAfterDispose_ThrowsNamingTheShape()
    {
        var t = Tensor.Zeros(new Shape(3, 5));
        t.Dispose();
        Assert.True(t.IsDisposed);
        Action[] uses =
        [
            () => t.ToArray<float>(),
            () => t.Item(),
            () => _ = t.Buffer,
            () => _ = t.View,
            () => F.Add(t, t),
            () => t.Reshape(15),
            () => t.Transpose(0, 1),
            () => t.Narrow(0, 0, 1),
            () => t.Contiguous(),
            () => t.To(DType.F64),
            () => t.Sum(),
            () => t.Relu(),
            () => F.FillInPlace(t, 1),
            () => t.Backward(),
        ];
        foreach (var use in uses)
        {
            var e = Assert.Throws<ObjectDisposedException>(use);
            Assert.Contains("[3, 5]", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void ViewKeepsBufferAliveAfterBaseIsDisposed()
    {
        var device = Device.CreateCpu("views");
        var t = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, new Shape(4), device);
        var v = t.Narrow(0, 2, 2);
        t.Dispose();
        Assert.Equal(16, device.Allocator.Stats().CurrentTotal);
        Assert.Equal(new float[] { 3, 4 }, v.ToArray<float>());
        v.Dispose();
        Assert.Equal(0, device.Allocator.Stats().CurrentTotal);
        Assert.True(t.IsDisposed);
    }

    [Fact]
    public void DeviceBuffer_DoubleReleaseThrows()
    {
        var device = Device.CreateCpu("buffers");
        var b = device.Allocator.Allocate(100, MemoryCategory.Other, "test");
        b.Retain();
        b.Release();
        Assert.False(b.IsFreed);
        b.Release();
        Assert.True(b.IsFreed);
        var e = Assert.Throws<ObjectDisposedException>(b.Release);
        Assert.Contains("100 bytes", e.Message, StringComparison.Ordinal);
        Assert.Throws<ObjectDisposedException>(b.Retain);
    }

    // ---- leaks across a training step ----

    private static Tensor MlpLoss(Tensor x, Tensor y, Tensor w1, Tensor b1, Tensor w2, Tensor b2)
    {
        using var h = F.Linear(x, w1, b1);
        using var a = h.Relu();
        using var logits = F.Linear(a, w2, b2);
        return F.CrossEntropy(logits, y);
    }

    [Fact]
    public void TrainingStep_LeavesNoTensorsOrBuffers_ExplicitDispose()
    {
        var device = Device.CreateCpu("leak-explicit");
        Tensor[] ps = [Param(device, new Shape(16, 8), 1, "w1"), Param(device, new Shape(16), 2, "b1"), Param(device, new Shape(4, 16), 3, "w2"), Param(device, new Shape(4), 4, "b2")];
        var paramBytes = 4L * (16 * 8 + 16 + 4 * 16 + 4);
        Assert.Equal(paramBytes, device.Allocator.Stats().CurrentTotal);
        var start = Tensor.LiveCount;
        for (var step = 0; step < 3; step++)
        {
            using var x = Tensor.Normal(new Shape(5, 8), 0, 1, (ulong)step, device: device);
            using var y = Tensor.FromArray(new[] { 0, 1, 2, 3, 1 }, new Shape(5), device);
            using (var loss = MlpLoss(x, y, ps[0], ps[1], ps[2], ps[3]))
                loss.Backward();
            foreach (var p in ps)
            {
                Assert.NotNull(p.Grad);
                Assert.Equal(p.Shape, p.Grad!.Shape);
            }
            Assert.Equal(paramBytes, device.Allocator.Current(MemoryCategory.Gradient));
            Assert.Equal(0, device.Allocator.Current(MemoryCategory.Activation));
            foreach (var p in ps)
                p.Grad = null;
        }
        Assert.Equal(start, Tensor.LiveCount);
        var stats = device.Allocator.Stats();
        Assert.Equal(paramBytes, stats.CurrentTotal);
        Assert.Equal(paramBytes, stats.Current(MemoryCategory.Parameter));
        foreach (var p in ps)
            p.Dispose();
        Assert.Equal(0, device.Allocator.Stats().CurrentTotal);
    }

    [Fact]
    public void TrainingStep_LeavesNoTensorsOrBuffers_Scoped()
    {
        var device = Device.CreateCpu("leak-scoped");
        Tensor[] ps = [Param(device, new Shape(16, 8), 1, "w1"), Param(device, new Shape(16), 2, "b1"), Param(device, new Shape(4, 16), 3, "w2"), Param(device, new Shape(4), 4, "b2")];
        var paramBytes = 4L * (16 * 8 + 16 + 4 * 16 + 4);
        var start = Tensor.LiveCount;
        for (var step = 0; step < 3; step++)
        {
            using var scope = TensorScope.Begin();
            var x = Tensor.Normal(new Shape(5, 8), 0, 1, (ulong)step, device: device);
            var y = Tensor.FromArray(new[] { 0, 1, 2, 3, 1 }, new Shape(5), device);
            // Not disposing anything by hand: the scope frees it all.
            var h = F.Linear(x, ps[0], ps[1]).Relu();
            var logits = F.Linear(h, ps[2], ps[3]);
            var loss = F.CrossEntropy(logits, y);
            loss.Backward();
            // Accumulates over steps: the gradient stays the parameter's (kept out of the scope).
        }
        Assert.Equal(start + ps.Length, Tensor.LiveCount);  // one gradient per parameter
        Assert.Equal(paramBytes, device.Allocator.Current(MemoryCategory.Gradient));
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Activation));
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Other));
        foreach (var p in ps)
            p.Grad = null;
        Assert.Equal(start, Tensor.LiveCount);
        Assert.Equal(paramBytes, device.Allocator.Stats().CurrentTotal);
        foreach (var p in ps)
            p.Dispose();
    }

    [Fact]
    public void GradientsAccumulateAcrossBackwardCalls()
    {
        var device = Device.CreateCpu("accumulate");
        using var w = Param(device, new Shape(3), 1, "w");
        using var x = Tensor.FromArray(new float[] { 1, 2, 3 }, new Shape(3), device);
        for (var i = 0; i < 2; i++)
        {
            using var p = w * x;
            using var s = p.Sum();
            s.Backward();
        }
        Assert.Equal(new float[] { 2, 4, 6 }, w.Grad!.ToArray<float>());
        Assert.Equal(12, device.Allocator.Current(MemoryCategory.Gradient));
    }

    [Fact]
    public void GradSetter_WrongShapeThrowsAndKeepsTheExistingGradient()
    {
        using var w = Tensor.Zeros(new Shape(2, 3));
        w.Grad = Tensor.Ones(new Shape(2, 3));
        var bad = Tensor.Ones(new Shape(3, 2));
        var e = Assert.Throws<ShapeMismatchException>(() => w.Grad = bad);
        Assert.Contains("[3, 2]", e.Message, StringComparison.Ordinal);
        Assert.Contains("[2, 3]", e.Message, StringComparison.Ordinal);
        Assert.NotNull(w.Grad);
        Assert.False(w.Grad!.IsDisposed);
        Assert.Equal(new float[] { 1, 1, 1, 1, 1, 1 }, w.Grad.ToArray<float>());
        bad.Dispose();
    }

    [Fact]
    public void DisposingAParameterDisposesItsGradient()
    {
        var start = Tensor.LiveCount;
        var w = Tensor.Zeros(new Shape(2));
        var g = Tensor.Ones(new Shape(2));
        w.Grad = g;
        w.Dispose();
        Assert.True(g.IsDisposed);
        Assert.Equal(start, Tensor.LiveCount);
    }

    // ---- graph lifetime ----

    [Fact]
    public void GraphNeverBackPropagated_IsFreedWhenOutputIsDisposed()
    {
        var device = Device.CreateCpu("no-backward");
        using var w = Param(device, new Shape(32, 16), 1, "w");
        using var x = Tensor.Normal(new Shape(8, 16), 0, 1, 2, device: device);
        var start = Tensor.LiveCount;
        Tensor loss;
        using (var h = F.Linear(x, w))
        using (var t = h.Tanh())
        using (var r = t.Sigmoid())
            loss = r.Mean();
        // Tanh saved its output t, Sigmoid its output r (their derivatives need nothing else), Mean nothing: the
        // two and the loss are still alive for a backward that never comes.
        Assert.Equal(2L * 8 * 32 * 4 + 4, device.Allocator.Current(MemoryCategory.Activation));
        Assert.True(loss.RequiresGrad);
        Assert.False(loss.IsLeaf);
        loss.Dispose();
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Activation));
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Gradient));
        Assert.Equal(start, Tensor.LiveCount);
        Assert.Null(w.Grad);
    }

    [Fact]
    public void GraphFreedOnlyWhenTheLastOutputIsDisposed()
    {
        var device = Device.CreateCpu("two-outputs");
        using var w = Param(device, new Shape(4), 1, "w");
        var start = Tensor.LiveCount;
        var e = w.Exp();   // saves its output (16 bytes)
        var s1 = e.Sum();
        var s2 = e.Mean();
        e.Dispose();
        Assert.Equal(16 + 4 + 4, device.Allocator.Current(MemoryCategory.Activation));
        s1.Dispose();
        Assert.Equal(16 + 4, device.Allocator.Current(MemoryCategory.Activation));
        s2.Backward();
        var expected = w.ToArray<float>().Select(v => MathF.Exp(v) / 4).ToArray();
        var grad = w.Grad!.ToArray<float>();
        for (var i = 0; i < 4; i++)
            Assert.Equal(expected[i], grad[i], 6);
        Assert.Equal(4, device.Allocator.Current(MemoryCategory.Activation));  // s2's own value
        s2.Dispose();
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Activation));
        w.Grad = null;
        Assert.Equal(start, Tensor.LiveCount);
    }

    [Fact]
    public void SavedTensorsAreFreedDuringBackward()
    {
        var device = Device.CreateCpu("freed-in-backward");
        using var w = Param(device, new Shape(64), 1, "w");
        using var loss = ((Func<Tensor>)(() =>
        {
            using var a = w.Tanh();
            using var b = a.Exp();
            return b.Sum();
        }))();
        Assert.Equal(2 * 64 * 4 + 4, device.Allocator.Current(MemoryCategory.Activation));  // w is a leaf (Parameter); a, b saved
        loss.Backward();
        Assert.Equal(4, device.Allocator.Current(MemoryCategory.Activation));
        Assert.Equal(64 * 4, device.Allocator.Current(MemoryCategory.Gradient));
    }

    [Fact]
    public void SecondBackwardThrowsAlready()
    {
        using var w = Param(Device.Cpu, new Shape(3), 1, "w");
        using var y = w.Exp();
        using var loss = y.Sum();
        loss.Backward();
        var e = Assert.Throws<InvalidOperationException>(loss.Backward);
        Assert.Contains("already", e.Message, StringComparison.Ordinal);
        // Also when starting from an intermediate of the consumed graph.
        using var g = Tensor.Ones(new Shape(3));
        e = Assert.Throws<InvalidOperationException>(() => y.Backward(g));
        Assert.Contains("already", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void BackwardThroughAConsumedPartOfTheGraphThrowsAlready_AndChangesNothing()
    {
        var device = Device.CreateCpu("consumed");
        using var w = Param(device, new Shape(3), 1, "w");
        var start = Tensor.LiveCount;
        using var y = w.Exp();
        using (var loss1 = y.Sum())
            loss1.Backward();
        var grad = w.Grad!.ToArray<float>();
        using var z = y * 2;
        using var loss2 = z.Sum();
        var e = Assert.Throws<InvalidOperationException>(loss2.Backward);
        Assert.Contains("already", e.Message, StringComparison.Ordinal);
        Assert.Equal(grad, w.Grad!.ToArray<float>());
        z.Dispose();
        loss2.Dispose();
        y.Dispose();
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Activation));
        Assert.Equal(12, device.Allocator.Current(MemoryCategory.Gradient));
        Assert.Equal(start + 1, Tensor.LiveCount);   // w's gradient
    }

    [Fact]
    public void CheckpointedFirstLayer_InputWithoutGrad_ParametersStillGetGradients()
    {
        var device = Device.CreateCpu("ckpt-first");
        using var w = Param(device, new Shape(4, 3), 1, "w");
        using var x = Tensor.Normal(new Shape(5, 3), 0, 1, 2, device: device);
        float[] Run(bool checkpoint)
        {
            Tensor Layer(Tensor[] i)
            {
                using var h = F.Linear(i[0], w);
                return h.Tanh();
            }
            using (var h = checkpoint ? Checkpoint.Run(Layer, x) : Layer([x]))
            using (var loss = h.Sum())
                loss.Backward();
            var g = w.Grad!.ToArray<float>();
            w.Grad = null;
            return g;
        }
        var start = Tensor.LiveCount;
        Assert.Equal(Run(false), Run(true));
        Assert.Equal(start, Tensor.LiveCount);
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Activation));
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Gradient));
    }

    [Fact]
    public void BackwardOnNonScalarThrowsNamingShape()
    {
        using var w = Param(Device.Cpu, new Shape(2, 3), 1, "w");
        using var y = w.Exp();
        var e = Assert.Throws<InvalidOperationException>(y.Backward);
        Assert.Contains("[2, 3]", e.Message, StringComparison.Ordinal);
        Assert.Contains("Backward", e.Message, StringComparison.Ordinal);
        Assert.Null(w.Grad);
    }

    [Fact]
    public void BackwardWithExplicitGradient()
    {
        using var w = Param(Device.Cpu, new Shape(2, 3), 1, "w");
        using var y = w * 3;
        y.Backward(Tensor.Full(new Shape(2, 3), 2));
        Assert.All(w.Grad!.ToArray<float>(), v => Assert.Equal(6f, v));
    }

    [Fact]
    public void BackwardWithWrongGradientShapeOrDTypeThrows()
    {
        using var w = Param(Device.Cpu, new Shape(2, 3), 1, "w");
        using var y = w.Exp();
        using var bad = Tensor.Ones(new Shape(3, 2));
        var e = Assert.Throws<ShapeMismatchException>(() => y.Backward(bad));
        Assert.Contains("[3, 2]", e.Message, StringComparison.Ordinal);
        Assert.Contains("[2, 3]", e.Message, StringComparison.Ordinal);
        using var bad64 = Tensor.Ones(new Shape(2, 3), DType.F64);
        e = Assert.Throws<ShapeMismatchException>(() => y.Backward(bad64));
        Assert.Contains("f64", e.Message, StringComparison.Ordinal);
        // The graph is intact: a correct backward still works.
        y.Backward(Tensor.Ones(new Shape(2, 3)));
        Assert.NotNull(w.Grad);
    }

    [Fact]
    public void BackwardWithoutGraphThrows()
    {
        using var x = Tensor.Ones(new Shape(1));
        using var y = x.Exp();
        var e = Assert.Throws<InvalidOperationException>(y.Backward);
        Assert.Contains("does not require grad", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void NoGrad_RecordsNothing()
    {
        var device = Device.CreateCpu("nograd");
        using var w = Param(device, new Shape(8), 1, "w");
        using (Autograd.NoGrad())
        {
            Assert.False(Autograd.IsEnabled);
            using var y = w.Tanh();
            Assert.False(y.RequiresGrad);
            Assert.True(y.IsLeaf);
            Assert.Equal(32, device.Allocator.Current(MemoryCategory.Activation));
            using (Autograd.NoGrad())
                Assert.False(Autograd.IsEnabled);
            Assert.False(Autograd.IsEnabled);
        }
        Assert.True(Autograd.IsEnabled);
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Activation));
    }

    [Fact]
    public void Detach_SharesMemoryWithoutHistory()
    {
        using var w = Param(Device.Cpu, new Shape(3), 1, "w");
        using var y = w.Exp();
        using var d = y.Detach();
        Assert.False(d.RequiresGrad);
        Assert.True(d.IsLeaf);
        Assert.Same(y.Buffer, d.Buffer);
    }

    [Fact]
    public void LeafUsedTwice_GradientsSum()
    {
        using var w = Param(Device.Cpu, new Shape(3), 1, "w");
        using var a = w * w;
        using var b = a + w;
        using var s = b.Sum();
        s.Backward();
        var wv = w.ToArray<float>();
        var g = w.Grad!.ToArray<float>();
        for (var i = 0; i < 3; i++)
            Assert.Equal(2 * wv[i] + 1, g[i], 6);
    }
}
