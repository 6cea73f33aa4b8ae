using Frugal.Backends;
using Frugal.Backends.Cuda;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>User kernels: CPU reference, autograd through a backward (itself a custom op), errors; on each device
/// the backend's <see cref="IBackend.Custom"/> entry (on CUDA the compiled kernel) against the CPU reference within
/// float tolerance (CUDA cases skipped, with the driver's reason, without a GPU or the emulator).</summary>
public class CustomOpTests
{
    // Each element is two f32 products, each within u = 2^-24 relative: 4u bounds any two correct roundings.
    private const double Tolerance = 4.0 / (1 << 24);

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

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void BackendEntryMatchesTheCpuReference(string device)
    {
        var dev = DeviceFor(device);
        if (dev.Kind == DeviceKind.Cuda)
            Assert.IsType<CudaBackend>(dev.Backend);
        using var scope = TensorScope.Begin();
        var x = Uniform(7, 10_007, -2, 2);
        var g = Uniform(8, 10_007, -2, 2);
        var reference = RunKernel(Device.Cpu, Grad.Kernel, x, g);
        AssertClose([.. x.Select((v, i) => 6 * v * g[i])], reference, 0, Tolerance, "cpu reference of 6·x·g");
        AssertClose(reference, RunKernel(dev, Grad.Kernel, x, g), 0, Tolerance, $"{device} Custom(6·x·g)");
        Assert.Empty(RunKernel(dev, Square.Kernel, Array.Empty<double>()));   // no elements: nothing to launch
    }

    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void KernelsSharingANameButNotTheirSourceEachRunTheirOwn(string device)
    {
        var dev = DeviceFor(device);
        var twice = new CustomOp("affine", Affine("2.0f * x[i]"), "affine", a => Map(a, v => 2 * v));
        var plusOne = new CustomOp("affine", Affine("x[i] + 1.0f"), "affine", a => Map(a, v => v + 1));
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray([1f, 2f, 3f], new Shape(3)).ToDevice(dev);
        Assert.Equal([2f, 4f, 6f], twice.Apply(x).ToArray<float>());
        Assert.Equal([2f, 3f, 4f], plusOne.Apply(x).ToArray<float>());
    }

    [Fact]
    public void CudaKernelMatchesTheCpuReference()
    {
        var gpu = DeviceFor("cuda:0");
        using var scope = TensorScope.Begin();
        var values = Uniform(5, 100_003, -2, 2).Select(v => (float)v).ToArray();
        var cpuX = Tensor.FromArray(values, new Shape(values.Length));
        cpuX.RequiresGrad = true;
        var gpuX = cpuX.ToDevice(gpu).Detach();
        gpuX.RequiresGrad = true;
        var cpuY = Square.Apply(cpuX);
        var gpuY = Square.Apply(gpuX);
        AssertClose(Doubles(cpuY), Doubles(gpuY), 0, Tolerance, "cuda scaled_square");
        F.Sum(cpuY).Backward();
        F.Sum(gpuY).Backward();
        AssertClose(Doubles(cpuX.Grad!), Doubles(gpuX.Grad!), 0, Tolerance, "cuda scaled_square gradient");
    }

    /// <summary>The output of <paramref name="kernel"/> run by <paramref name="device"/>'s backend on F32 inputs.</summary>
    private static double[] RunKernel(Device device, CustomKernel kernel, params double[][] inputs)
    {
        var shape = new Shape(inputs[0].Length);
        var operands = inputs.Select(v => Tensor.FromArray(v.Select(d => (float)d).ToArray(), shape, device)).ToArray();
        var y = Tensor.Empty(shape, DType.F32, device);
        device.Backend.Custom(kernel, [.. operands.Select(t => t.View)], y.View);
        return Doubles(y);
    }

    private static double[] Doubles(Tensor t) => [.. t.ToArray<float>().Select(v => (double)v)];

    private static string Affine(string body) => $$"""
        extern "C" __global__ void affine(const float* x, float* y, long long n) {
            long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
            if (i < n) y[i] = {{body}};
        }
        """;

    private static void Map(CustomKernelArgs a, Func<float, float> f)
    {
        for (var i = 0; i < a.Length; i++)
            a.Output[i] = f(a.Input(0)[i]);
    }
}
