namespace Frugal.Tests;

/// <summary>User kernels: CPU reference, autograd through a backward (itself a custom op), errors; on CUDA the
/// compiled kernel against the CPU reference (skipped, with the driver's reason, without a GPU).</summary>
public class CustomOpTests
{
    private const string Source = """
        extern "C" __global__ void scaled_square(const float* x, float* y, long long n) {
            long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
            if (i < n) y[i] = 3.0f * x[i] * x[i];
        }
        extern "C" __global__ void scaled_square_grad(const float* x, const float* g, float* dx, long long n) {
            long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
            if (i < n) dx[i] = 6.0f * x[i] * g[i];
        }
        """;

    private static readonly CustomOp Grad = new("scaled_square_grad", Source, "scaled_square_grad", a =>
    {
        for (var i = 0; i < a.Length; i++)
            a.Output[i] = 6f * a.Input(0)[i] * a.Input(1)[i];
    });

    private static readonly CustomOp Square = new("scaled_square", Source, "scaled_square", a =>
    {
        for (var i = 0; i < a.Length; i++)
            a.Output[i] = 3f * a.Input(0)[i] * a.Input(0)[i];
    }, backward: (inputs, _, g) => [Grad.Apply(inputs[0], g)]);

    [Fact]
    public void CpuReferenceRunsAndTakesPartInAutograd()
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray([1f, -2f, 0.5f, 4f], new Shape(2, 2));
        x.RequiresGrad = true;
        var y = Square.Apply(x);
        Assert.Equal([3f, 12f, 0.75f, 48f], y.ToArray<float>());
        var w = Tensor.FromArray([1f, 2f, 3f, 4f], new Shape(2, 2));
        F.Sum(y * w).Backward();
        Assert.Equal([6f, -24f, 9f, 96f], x.Grad!.ToArray<float>());   // 6·x·w
    }

    [Fact]
    public void ReadmeExample()
    {
        const string source = """
            extern "C" __global__ void scaled_square(const float* x, float* y, long long n) {
                long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
                if (i < n) y[i] = 3.0f * x[i] * x[i];
            }
            """;
        var scaledSquare = new CustomOp("scaled_square", source, "scaled_square",
            cpu: a => { for (var i = 0; i < a.Length; i++) a.Output[i] = 3f * a.Input(0)[i] * a.Input(0)[i]; },
            backward: (inputs, _, g) => [g * inputs[0] * 6.0]);
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray([1f, -2f, 3f], new Shape(3));
        x.RequiresGrad = true;
        var y = scaledSquare.Apply(x);
        Assert.Equal([3f, 12f, 27f], y.ToArray<float>());
        F.Sum(y).Backward();
        Assert.Equal([6f, -12f, 18f], x.Grad!.ToArray<float>());
    }

    [Fact]
    public void WorksOnStridedInputs()
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], new Shape(2, 3));
        var y = Square.Apply(x.Transpose(0, 1));
        Assert.Equal([3f, 48f, 12f, 75f, 27f, 108f], y.ToArray<float>());
    }

    [Fact]
    public void BadInputIsNamed_AndAMissingBackwardSaysSo()
    {
        using var scope = TensorScope.Begin();
        var a = Tensor.Zeros(new Shape(2, 3));
        var e = Assert.Throws<ShapeMismatchException>(() => Grad.Apply(a, Tensor.Zeros(new Shape(3, 2))));
        Assert.Contains("custom op 'scaled_square_grad'", e.Message, StringComparison.Ordinal);
        Assert.Contains("[3, 2]", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ShapeMismatchException>(() => Square.Apply(Tensor.Zeros(new Shape(2), DType.F64)));
        Assert.Contains("must be f32", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => Square.Apply());
        Assert.Throws<ArgumentOutOfRangeException>(() => new CustomOp("k", Source, "k", _ => { }, threadsPerBlock: 100));

        var noGrad = new CustomOp("identity", Source, "identity", args => args.Input(0).CopyTo(args.Output));
        var x = Tensor.Ones(new Shape(3));
        x.RequiresGrad = true;
        var loss = F.Sum(noGrad.Apply(x));
        var missing = Assert.Throws<InvalidOperationException>(loss.Backward);
        Assert.Contains("custom op 'identity' has no backward", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CudaKernelMatchesTheCpuReference()
    {
        var gpu = TestUtil.DeviceFor("cuda:0");
        using var scope = TensorScope.Begin();
        var values = TestUtil.Uniform(5, 100_003, -2, 2).Select(v => (float)v).ToArray();
        var cpuX = Tensor.FromArray(values, new Shape(values.Length));
        cpuX.RequiresGrad = true;
        var gpuX = cpuX.ToDevice(gpu).Detach();
        gpuX.RequiresGrad = true;
        var cpuY = Square.Apply(cpuX);
        var gpuY = Square.Apply(gpuX);
        Assert.Equal(cpuY.ToArray<float>(), gpuY.ToArray<float>());
        F.Sum(cpuY).Backward();
        F.Sum(gpuY).Backward();
        Assert.Equal(cpuX.Grad!.ToArray<float>(), gpuX.Grad!.ToArray<float>());
    }
}
