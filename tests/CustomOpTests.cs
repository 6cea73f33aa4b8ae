using System.Numerics;
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

    /// <summary>The README's op of the general form, exactly as written there.</summary>
    private static CustomOp ReadmeL2Normalize()
    {
        const string rows = """
            extern "C" __global__ void l2_normalize(const float* x, float* y, float* norm, int cols, float eps) {
                extern __shared__ float partial[];                   // blockDim.x floats (sharedBytes)
                const float* xr = x + (long long)blockIdx.x * cols;  // one block per row
                float s = 0;
                for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c] * xr[c];
                partial[threadIdx.x] = s;
                __syncthreads();
                for (int k = blockDim.x / 2; k > 0; k >>= 1) {
                    if (threadIdx.x < k) partial[threadIdx.x] += partial[threadIdx.x + k];
                    __syncthreads();
                }
                float n = sqrtf(partial[0] + eps);
                for (int c = threadIdx.x; c < cols; c += blockDim.x) y[(long long)blockIdx.x * cols + c] = xr[c] / n;
                if (threadIdx.x == 0) norm[blockIdx.x] = n;
            }
            """;
        var l2Normalize = new CustomOp("l2_normalize", rows, "l2_normalize",
            inputs: [DType.F32], outputs: [DType.F32, DType.F32],
            outputShapes: s => [s[0], new Shape(s[0][0])],                       // y [R, C], norm [R]
            launch: s => new(grid: s[0][0], block: 256, sharedBytes: 256 * sizeof(float)),
            scalars: s => [s[0][1], 1e-6f],                                      // int cols, float eps: after the pointers
            cpu: a =>
            {
                ReadOnlySpan<float> x = a.InputSpan<float>(0);
                Span<float> y = a.OutputSpan<float>(0), norm = a.OutputSpan<float>(1);
                (int cols, float eps) = (a.Scalar(0).AsInt32(), a.Scalar(1).AsSingle());
                for (var r = 0; r < norm.Length; r++)
                {
                    var sum = 0f;
                    for (var c = 0; c < cols; c++) sum += x[r * cols + c] * x[r * cols + c];
                    norm[r] = MathF.Sqrt(sum + eps);
                    for (var c = 0; c < cols; c++) y[r * cols + c] = x[r * cols + c] / norm[r];
                }
            },
            backward: (_, o, g) =>                                               // g[k] is null where output k got none
            {
                var (y, n) = (o[0], F.Unsqueeze(o[1], 1));
                var dx = g[0] is { } dy ? (dy - y * F.Sum(dy * y, [1], keepDim: true)) / n : null;
                return [g[1] is { } dn ? (dx is null ? y * F.Unsqueeze(dn, 1) : dx + y * F.Unsqueeze(dn, 1)) : dx];
            });
        return l2Normalize;
    }

    /// <summary>The README's row op on each device against x / √(Σx² + ε) and its gradients composed of engine ops
    /// in float64. Tolerance: the CPU sums the 300 squares in order, within 299u relative (all terms positive); the
    /// square root halves that, the division adds u: y and the norm are within 256u. Each gradient term is at most about
    /// 1 in magnitude here (|dy|, |dnorm| ≤ 1, ‖y‖ = 1) and combines a few such values: 512u.</summary>
    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void ReadmeGeneralExample(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 6, cols = 300;
        var values = Uniform(21, rows * cols);
        var (ry, rn) = (Uniform(22, rows * cols), Uniform(23, rows));
        var x = On(dev, DType.F32, values, rows, cols);
        x.RequiresGrad = true;
        var outputs = ReadmeL2Normalize().ApplyAll(x);
        F.Add(F.Sum(outputs[0] * On(dev, DType.F32, ry, rows, cols)), F.Sum(outputs[1] * On(dev, DType.F32, rn, rows))).Backward();

        var x64 = F64(values, rows, cols);
        x64.RequiresGrad = true;
        var norm = F.Sum(x64 * x64, [1], keepDim: true).Add(1e-6).Sqrt();
        var y = x64 / norm;
        F.Add(F.Sum(y * F64(ry, rows, cols)), F.Sum(F.Reshape(norm, rows) * F64(rn, rows))).Backward();
        const double tol = 256.0 / (1 << 24);
        AssertClose(Values(y), Values(outputs[0]), tol, tol, $"{device} l2_normalize y");
        AssertClose(Values(norm), Values(outputs[1]), 0, tol, $"{device} l2_normalize norm");
        AssertClose(Values(x64.Grad!), Values(x.Grad!), 2 * tol, 2 * tol, $"{device} l2_normalize gradient");
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

    // ---- the general form: user launch, several outputs, any dtype, scalars ----

    private const int RowBlock = 128;

    // One block per row: a tree reduction in dynamic shared memory (RowBlock values of T, then RowBlock ints) for
    // the row's max and its first index, then for Σ exp(x - max). Outputs: softmax [R, C], max [R], argmax [R] (i32).
    // The backward kernel takes y, dy, dmax and argmax: dx = y·(dy - Σ dy·y) + (c == argmax ? dmax : 0).
    private const string RowSource = """
        #include "common.cuh"
        template <class T> __device__ T block_sum(T v, T* partial) {
            partial[threadIdx.x] = v;
            __syncthreads();
            for (int s = blockDim.x / 2; s > 0; s >>= 1) {
                if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
                __syncthreads();
            }
            T total = partial[0];
            __syncthreads();
            return total;
        }
        template <class T> __device__ void row_softmax(const T* x, T* y, T* row_max, int* arg_max, int rows, int cols, T* best) {
            int* where = (int*)(best + blockDim.x);
            if (blockIdx.x >= rows) return;
            const T* xr = x + (long long)blockIdx.x * cols;
            T m = xr[0];
            int a = 0;
            for (int c = threadIdx.x; c < cols; c += blockDim.x)
                if (xr[c] > m) { m = xr[c]; a = c; }
            best[threadIdx.x] = m;
            where[threadIdx.x] = a;
            __syncthreads();
            for (int s = blockDim.x / 2; s > 0; s >>= 1) {
                if (threadIdx.x < s) {
                    T o = best[threadIdx.x + s];
                    int oa = where[threadIdx.x + s];
                    if (o > best[threadIdx.x] || (o == best[threadIdx.x] && oa < where[threadIdx.x])) { best[threadIdx.x] = o; where[threadIdx.x] = oa; }
                }
                __syncthreads();
            }
            m = best[0];
            a = where[0];
            __syncthreads();
            T sum = 0;
            for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += fr_exp(xr[c] - m);
            sum = block_sum(sum, best);
            for (int c = threadIdx.x; c < cols; c += blockDim.x) y[(long long)blockIdx.x * cols + c] = fr_exp(xr[c] - m) / sum;
            if (threadIdx.x == 0) { row_max[blockIdx.x] = m; arg_max[blockIdx.x] = a; }
        }
        template <class T> __device__ void row_softmax_grad(const T* y, const T* dy, const T* dmax, const int* arg_max, T* dx, int rows, int cols, T* partial) {
            if (blockIdx.x >= rows) return;
            long long base = (long long)blockIdx.x * cols;
            T dot = 0;
            for (int c = threadIdx.x; c < cols; c += blockDim.x) dot += dy[base + c] * y[base + c];
            dot = block_sum(dot, partial);
            for (int c = threadIdx.x; c < cols; c += blockDim.x)
                dx[base + c] = y[base + c] * (dy[base + c] - dot) + (c == arg_max[blockIdx.x] ? dmax[blockIdx.x] : (T)0);
        }
        extern "C" __global__ void row_softmax_f32(const float* x, float* y, float* m, int* a, int rows, int cols) {
            extern __shared__ float shared_f32[];
            row_softmax(x, y, m, a, rows, cols, shared_f32);
        }
        extern "C" __global__ void row_softmax_f64(const double* x, double* y, double* m, int* a, int rows, int cols) {
            extern __shared__ double shared_f64[];
            row_softmax(x, y, m, a, rows, cols, shared_f64);
        }
        extern "C" __global__ void row_softmax_grad_f32(const float* y, const float* dy, const float* dm, const int* a, float* dx, int rows, int cols) {
            extern __shared__ float grad_f32[];
            row_softmax_grad(y, dy, dm, a, dx, rows, cols, grad_f32);
        }
        extern "C" __global__ void row_softmax_grad_f64(const double* y, const double* dy, const double* dm, const int* a, double* dx, int rows, int cols) {
            extern __shared__ double grad_f64[];
            row_softmax_grad(y, dy, dm, a, dx, rows, cols, grad_f64);
        }
        """;

    private static readonly CustomOp RowSoftmax32 = RowSoftmax(DType.F32);
    private static readonly CustomOp RowSoftmax64 = RowSoftmax(DType.F64);

    /// <summary>The row softmax with max and argmax in <paramref name="t"/> (F32 or F64), its backward a second op.</summary>
    private static CustomOp RowSoftmax(DType t)
    {
        var grad = new CustomOp($"row_softmax_grad_{t.Name()}", RowSource, $"row_softmax_grad_{t.Name()}",
            inputs: [t, t, t, DType.I32], outputs: [t],
            outputShapes: s => [s[0]],
            launch: s => new LaunchConfig(s[0][0], RowBlock, RowBlock * t.SizeOf()),
            cpu: t == DType.F32 ? RowSoftmaxGradCpu<float> : RowSoftmaxGradCpu<double>,
            scalars: s => [s[0][0], s[0][1]]);
        return new CustomOp($"row_softmax_{t.Name()}", RowSource, $"row_softmax_{t.Name()}",
            inputs: [t], outputs: [t, t, DType.I32],
            outputShapes: s => [s[0], new Shape(s[0][0]), new Shape(s[0][0])],
            launch: s => new LaunchConfig(s[0][0], RowBlock, RowBlock * (t.SizeOf() + sizeof(int))),
            cpu: t == DType.F32 ? RowSoftmaxCpu<float> : RowSoftmaxCpu<double>,
            scalars: s => [s[0][0], s[0][1]],
            backward: (_, o, g) =>
            {
                var dy = g[0] ?? Tensor.Zeros(o[0].Shape, t, o[0].Device);
                var dmax = g[1] ?? Tensor.Zeros(o[1].Shape, t, o[1].Device);
                Assert.Null(g[2]);   // the argmax is an integer output: never a gradient
                return [grad.Apply(o[0], dy, dmax, o[2])];
            });
    }

    private static void RowSoftmaxCpu<T>(CustomKernelArgs a) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ReadOnlySpan<T> x = a.InputSpan<T>(0);
        Span<T> y = a.OutputSpan<T>(0), max = a.OutputSpan<T>(1);
        var arg = a.OutputSpan<int>(2);
        int rows = a.Scalar(0).AsInt32(), cols = a.Scalar(1).AsInt32();
        for (var r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * cols, cols);
            var at = 0;
            for (var c = 1; c < cols; c++)
                at = xr[c] > xr[at] ? c : at;
            var sum = T.Zero;
            foreach (var v in xr)
                sum += T.Exp(v - xr[at]);
            for (var c = 0; c < cols; c++)
                y[r * cols + c] = T.Exp(xr[c] - xr[at]) / sum;
            (max[r], arg[r]) = (xr[at], at);
        }
    }

    private static void RowSoftmaxGradCpu<T>(CustomKernelArgs a) where T : unmanaged, IFloatingPointIeee754<T>
    {
        ReadOnlySpan<T> y = a.InputSpan<T>(0), dy = a.InputSpan<T>(1), dmax = a.InputSpan<T>(2);
        var arg = a.InputSpan<int>(3);
        var dx = a.OutputSpan<T>(0);
        int rows = a.Scalar(0).AsInt32(), cols = a.Scalar(1).AsInt32();
        for (var r = 0; r < rows; r++)
        {
            var dot = T.Zero;
            for (var c = 0; c < cols; c++)
                dot += dy[r * cols + c] * y[r * cols + c];
            for (var c = 0; c < cols; c++)
                dx[r * cols + c] = y[r * cols + c] * (dy[r * cols + c] - dot) + (c == arg[r] ? dmax[r] : T.Zero);
        }
    }

    /// <summary>Softmax, max and first argmax of each row of <paramref name="x"/> [rows, cols] in float64.</summary>
    private static (double[] Y, double[] Max, int[] Arg) RowSoftmaxReference(double[] x, int rows, int cols)
    {
        var (y, max, arg) = (new double[x.Length], new double[rows], new int[rows]);
        for (var r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * cols, cols);
            arg[r] = row.IndexOf(row.ToArray().Max());
            max[r] = row[arg[r]];
            var sum = 0.0;
            foreach (var v in row)
                sum += Math.Exp(v - max[r]);
            for (var c = 0; c < cols; c++)
                y[r * cols + c] = Math.Exp(row[c] - max[r]) / sum;
        }
        return (y, max, arg);
    }

    // F32 softmax element: x - max rounds with |x - max| ≤ 8 here, an absolute error of ≤ 8u in exp's argument
    // (8u relative in its result); exp itself ≤ 2 ulp; the row sum is ≤ 3 terms per thread then a 7-level tree
    // (≤ 10u); the division one more u: ≈ 21u, so 32u = 32·2^-24 bounds it. Max and argmax are comparisons of the
    // same f32 values: exact.
    private const double SoftmaxTolerance = 32.0 / (1 << 24);

    /// <summary>The row op with its own launch on each device (the CPU function on the CPU, the kernel with one
    /// block per row, a shared-memory reduction and __syncthreads on CUDA): 37 rows of 300 columns, not a multiple of
    /// the 128-thread block, against the float64 reference.</summary>
    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void RowOpWithItsOwnLaunch_SeveralOutputs_MatchTheFloat64Reference(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 37, cols = 300;
        var x = Uniform(11, rows * cols, -4, 4);
        var (y, max, arg) = RowSoftmaxReference(x, rows, cols);
        var outputs = RowSoftmax32.ApplyAll(Tensor.FromArray(x.Select(v => (float)v).ToArray(), new Shape(rows, cols), dev));
        Assert.Equal([new Shape(rows, cols), new Shape(rows), new Shape(rows)], outputs.Select(o => o.Shape));
        Assert.Equal([DType.F32, DType.F32, DType.I32], outputs.Select(o => o.DType));
        AssertClose(y, Doubles(outputs[0]), 0, SoftmaxTolerance, $"{device} row softmax");
        AssertClose(max, Doubles(outputs[1]), 0, 0, $"{device} row max");
        Assert.Equal(arg, outputs[2].ToArray<int>());

        // Float64 on the device too: within a few u of 2^-53.
        var outputs64 = RowSoftmax64.ApplyAll(Tensor.FromArray(x, new Shape(rows, cols), dev));
        AssertClose(y, outputs64[0].ToArray<double>(), 0, 32.0 / (1L << 53), $"{device} row softmax f64");
        Assert.Equal(arg, outputs64[2].ToArray<int>());
    }

    // u8 codes → f32 values, i32 and i8 centred codes, with one scalar of each C type in an order that needs padding
    // (long long, float, int, double); f16 → f16 and bf16. Every result is exact: (q - zero)·0.5 + 0.25 is
    // representable in f32 whether or not the compiler fuses it, and x·s rounds once from f32 to f16 or bf16 on both
    // devices (round to nearest even).
    private const string TypedSource = """
        extern "C" __global__ void dequant_u8(const unsigned char* q, float* y, int* centred, signed char* small,
                                              long long n, float scale, int zero, double bias) {
            long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
            if (i >= n) return;
            int c = (int)q[i] - zero;
            y[i] = (float)c * scale + (float)bias;
            centred[i] = c;
            small[i] = (signed char)((int)q[i] - 128);
        }
        __device__ float from_half(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
        __device__ unsigned short to_half(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
        __device__ unsigned short to_bf16(float f) { unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
        extern "C" __global__ void scale_half(const unsigned short* x, unsigned short* y, unsigned short* b, long long n, float s) {
            long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
            if (i >= n) return;
            float v = from_half(x[i]) * s;
            y[i] = to_half(v);
            b[i] = to_bf16(v);
        }
        """;

    private static readonly CustomOp Dequant = new("dequant_u8", TypedSource, "dequant_u8",
        inputs: [DType.U8], outputs: [DType.F32, DType.I32, DType.I8],
        outputShapes: s => [s[0], s[0], s[0]],
        launch: s => new LaunchConfig((int)((s[0].Numel + 255) / 256), 256),
        cpu: a =>
        {
            var q = a.InputSpan<byte>(0);
            var y = a.OutputSpan<float>(0);
            var centred = a.OutputSpan<int>(1);
            var small = a.OutputSpan<sbyte>(2);
            var (scale, zero, bias) = (a.Scalar(1).AsSingle(), a.Scalar(2).AsInt32(), a.Scalar(3).AsDouble());
            for (var i = 0; i < q.Length; i++)
                (y[i], centred[i], small[i]) = ((q[i] - zero) * scale + (float)bias, q[i] - zero, (sbyte)(q[i] - 128));
        },
        scalars: s => [s[0].Numel, 0.5f, 100, 0.25]);

    private static readonly CustomOp ScaleHalf = new("scale_half", TypedSource, "scale_half",
        inputs: [DType.F16], outputs: [DType.F16, DType.BF16],
        outputShapes: s => [s[0], s[0]],
        launch: s => new LaunchConfig((int)((s[0].Numel + 127) / 128), 128),
        cpu: a =>
        {
            var x = a.InputSpan<Half>(0);
            var y = a.OutputSpan<Half>(0);
            var b = a.OutputSpan<BFloat16>(1);
            var s = a.Scalar(1).AsSingle();
            for (var i = 0; i < x.Length; i++)
                (y[i], b[i]) = ((Half)((float)x[i] * s), (BFloat16)((float)x[i] * s));
        },
        scalars: s => [s[0].Numel, 1.7f]);

    /// <summary>Integer and 16-bit dtypes in and out, and scalars of every C type, on each device, exactly.</summary>
    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void OtherDTypes_InAndOut_AndEveryScalarType(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        var codes = Enumerable.Range(0, 1000).Select(i => (byte)(i * 37 % 256)).ToArray();
        var outs = Dequant.ApplyAll(Tensor.FromArray(codes, new Shape(10, 100), dev));
        Assert.Equal([.. codes.Select(q => (q - 100) * 0.5f + 0.25f)], outs[0].ToArray<float>());
        Assert.Equal([.. codes.Select(q => q - 100)], outs[1].ToArray<int>());
        Assert.Equal([.. codes.Select(q => (sbyte)(q - 128))], outs[2].ToArray<sbyte>());
        Assert.All(outs, o => Assert.False(o.RequiresGrad));

        var halves = Uniform(3, 777, -60000 / 1.7, 60000 / 1.7).Select(v => (Half)v).ToArray();
        var scaled = ScaleHalf.ApplyAll(Tensor.FromArray(halves, new Shape(777), dev));
        Assert.Equal([.. halves.Select(h => (Half)((float)h * 1.7f))], scaled[0].ToArray<Half>());
        Assert.Equal([.. halves.Select(h => (BFloat16)((float)h * 1.7f))], scaled[1].ToArray<BFloat16>());
    }

    /// <summary>Gradients through the float64 row op, by finite differences, for a loss using both float outputs,
    /// only the softmax, and only the max (the other's gradient reaches the backward as null). Inputs on a grid of
    /// spacing 0.1 never tie, so a step of 1e-6 never moves the argmax; central differences in float64 err by about
    /// h² = 1e-12 (truncation) plus 1e-16·|L|/h ≈ 1e-9 (rounding), well within the checker's 1e-6 + 1e-5·|g|.</summary>
    [Fact]
    public void GradientsThroughSeveralOutputs_MatchFiniteDifferences()
    {
        const int rows = 5, cols = 11;
        var x = new[] { In(Spaced(4, rows * cols), rows, cols) };
        var r = Uniform(9, rows, -1, 1);
        GradCheck(xs =>
        {
            var o = RowSoftmax64.ApplyAll(xs[0]);
            Assert.True(o[0].RequiresGrad == xs[0].RequiresGrad && o[1].RequiresGrad == xs[0].RequiresGrad);
            Assert.False(o[2].RequiresGrad);
            return F.Concat([F.Flatten(o[0]), o[1]], 0);
        }, x);
        GradCheck(xs => RowSoftmax64.ApplyAll(xs[0])[0], x);
        GradCheck(xs => RowSoftmax64.ApplyAll(xs[0])[1], x);
        // An output used twice gets the sum of both uses.
        GradCheck(xs =>
        {
            var o = RowSoftmax64.ApplyAll(xs[0]);
            return o[1] * o[1] + o[1];
        }, x);
    }

    /// <summary>The same gradients on each device in f32 (backward kernel and all) against the float64 CPU ones.
    /// Each dx is y·(dy - dot) + [argmax]·dmax with |dy| ≤ 1 and Σy = 1: y is within 32u relative, dot within about
    /// 32u + 10u (tree) of Σ|dy|y ≤ 1, so |error| ≤ y·(2·32u + 42u) + one rounding ≲ 128u absolute.</summary>
    [Theory]
    [MemberData(nameof(Devices), MemberType = typeof(TestUtil))]
    public void GradientsThroughSeveralOutputs_OnEachDevice(string device)
    {
        var dev = DeviceFor(device);
        using var scope = TensorScope.Begin();
        const int rows = 9, cols = 300;
        var x = Spaced(5, rows * cols, 0.01);
        var (ry, rm) = (Uniform(6, rows * cols), Uniform(7, rows));
        double[] Grad(CustomOp op, DType t, Device d)
        {
            var xt = On(d, t, x, rows, cols);
            xt.RequiresGrad = true;
            var o = op.ApplyAll(xt);
            F.Add(F.Sum(o[0] * On(d, t, ry, rows, cols)), F.Sum(o[1] * On(d, t, rm, rows))).Backward();
            return Values(xt.Grad!);
        }
        const double tol = 128.0 / (1 << 24);
        AssertClose(Grad(RowSoftmax64, DType.F64, Device.Cpu), Grad(RowSoftmax32, DType.F32, dev), tol, tol, $"{device} row softmax gradient");
    }

    /// <summary>A general op over one F32 [R, C] input with the given rules (defaults: one [R] output, a valid launch).</summary>
    private static CustomOp Probe(Func<IReadOnlyList<Shape>, IReadOnlyList<Shape>>? outputShapes = null, Func<IReadOnlyList<Shape>, LaunchConfig>? launch = null,
        Func<IReadOnlyList<Shape>, IReadOnlyList<CustomScalar>>? scalars = null, CustomMultiBackward? backward = null, DType[]? inputs = null)
        => new("probe", RowSource, "row_softmax_f32", inputs ?? [DType.F32], [DType.F32],
            outputShapes ?? (s => [new Shape(s[0][0])]), launch ?? (s => new LaunchConfig(s[0][0], 128)),
            cpu: a => a.Output.Fill(1f), scalars, backward);

    private static void AssertThrowsNaming<TException>(Action action, params string[] parts) where TException : Exception
    {
        var e = Assert.Throws<TException>(action);
        foreach (var part in parts)
            Assert.Contains(part, e.Message, StringComparison.Ordinal);
    }

    /// <summary>Every precondition of the general form fails with a message that names the op and what is wrong.</summary>
    [Fact]
    public void GeneralFormErrorsNameTheOpAndTheOffender()
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.Zeros(new Shape(4, 5));
        const string op = "custom op 'probe'";

        // Inputs: count and dtype against the declaration.
        AssertThrowsNaming<ArgumentException>(() => Probe().Apply(x, x), op, "takes 1 inputs (f32), got 2", "[4, 5] f32");
        AssertThrowsNaming<ShapeMismatchException>(() => Probe(inputs: [DType.F32, DType.I32]).Apply(x, x), op, "input 1 must be i32", "[4, 5] f32");
        AssertThrowsNaming<InvalidOperationException>(() => RowSoftmax32.Apply(x), "custom op 'row_softmax_f32' has 3 outputs", "ApplyAll");

        // Output rule: a shape per declared output, each allocatable.
        AssertThrowsNaming<InvalidOperationException>(() => Probe(outputShapes: s => [s[0], s[0]]).Apply(x), op, "gave 2 shapes for 1 outputs", "[4, 5] f32");
        AssertThrowsNaming<InvalidOperationException>(() => Probe(outputShapes: _ => [new Shape(int.MaxValue, int.MaxValue, int.MaxValue)]).Apply(x),
            op, "output 0 the shape [2147483647, 2147483647, 2147483647]", "[4, 5] f32");

        // Launch rule: CUDA's limits, checked on every device (the CPU does not launch, but the op is the same).
        AssertThrowsNaming<InvalidOperationException>(() => Probe(launch: _ => new LaunchConfig(4, new Dim3(32, 64))).Apply(x), op, "[4, 5] f32", "block (32, 64, 1) has 2048 threads", "1024");
        AssertThrowsNaming<InvalidOperationException>(() => Probe(launch: _ => new LaunchConfig(4, new Dim3(1, 1, 65))).Apply(x), op, "block (1, 1, 65) exceeds", "(1024, 1024, 64)");
        AssertThrowsNaming<InvalidOperationException>(() => Probe(launch: _ => new LaunchConfig(4, 0)).Apply(x), op, "block (0, 1, 1) has an extent below 1");
        AssertThrowsNaming<InvalidOperationException>(() => Probe(launch: _ => new LaunchConfig(new Dim3(1, 70_000), 32)).Apply(x), op, "grid (1, 70000, 1) exceeds", "(2147483647, 65535, 65535)");
        AssertThrowsNaming<InvalidOperationException>(() => Probe(launch: _ => new LaunchConfig(-1, 32)).Apply(x), op, "grid (-1, 1, 1) has a negative extent");
        AssertThrowsNaming<InvalidOperationException>(() => Probe(launch: _ => new LaunchConfig(4, 32, 48 * 1024 + 4)).Apply(x), op, "49156 bytes of dynamic shared memory", "49152");
        Assert.Equal(new Shape(4), Probe(launch: _ => new LaunchConfig(4, new Dim3(8, 8, 16), 48 * 1024)).Apply(x).Shape);   // at the limits: runs

        // Scalars: at most CUDA's 4 KiB of parameters.
        AssertThrowsNaming<InvalidOperationException>(() => Probe(scalars: _ => [.. Enumerable.Repeat<CustomScalar>(1L, 600)]).Apply(x), op, "600 scalars take 4816 bytes", "4096");

        // The CPU function reads each operand as its own element type only.
        var typed = new CustomOp("typed", TypedSource, "dequant_u8", [DType.U8], [DType.F32], s => [s[0]], s => new LaunchConfig(1, 32),
            cpu: a => a.InputSpan<sbyte>(0).ToArray());
        AssertThrowsNaming<InvalidOperationException>(() => typed.Apply(Tensor.Zeros(new Shape(3), DType.U8)), "custom op 'typed'", "input 0 is u8, not SByte");

        // Backward: a gradient per input, each of its input's shape and dtype, none for an integer input.
        var xr = Tensor.Zeros(new Shape(4, 5));
        xr.RequiresGrad = true;
        var ix = Tensor.Zeros(new Shape(4), DType.I32);
        AssertThrowsNaming<InvalidOperationException>(() => F.Sum(Probe(backward: (_, _, _) => []).Apply(xr)).Backward(), op, "backward returned 0 gradients for 1 inputs");
        AssertThrowsNaming<ShapeMismatchException>(() => F.Sum(Probe(backward: (_, _, _) => [Tensor.Zeros(new Shape(5, 4))]).Apply(xr)).Backward(),
            op, "gradient 0 is [5, 4] f32", "input 0 is [4, 5] f32");
        AssertThrowsNaming<ShapeMismatchException>(() => F.Sum(Probe(backward: (_, _, _) => [Tensor.Zeros(new Shape(4, 5), DType.F64)]).Apply(xr)).Backward(),
            op, "gradient 0 is [4, 5] f64", "input 0 is [4, 5] f32");
        AssertThrowsNaming<InvalidOperationException>(() => F.Sum(Probe(inputs: [DType.F32, DType.I32], backward: (_, _, _) => [null, Tensor.Zeros(new Shape(4))]).Apply(xr, ix)).Backward(),
            op, "gradient 1 [4] f32 cpu for input 1 [4] i32 cpu", "takes none");
        AssertThrowsNaming<InvalidOperationException>(() => F.Sum(Probe().Apply(xr)).Backward(), "custom op 'probe' has no backward");
    }

    /// <summary>A backward may hand back a tensor it was given (or one tensor for two inputs): the engine frees each
    /// gradient it receives, so the op gives it an alias instead.</summary>
    [Fact]
    public void ABackwardReturningAGivenTensorTwice_IsSafe()
    {
        using var scope = TensorScope.Begin();
        var sum = new CustomOp("sum2", TypedSource, "unused", [DType.F32, DType.F32], [DType.F32], s => [s[0]], _ => new LaunchConfig(1, 32),
            cpu: a => { for (var i = 0; i < a.Length; i++) a.Output[i] = a.Input(0)[i] + a.Input(1)[i]; },
            backward: (_, _, g) => [g[0], g[0]]);
        var (a, b) = (Tensor.FromArray([1f, 2f], new Shape(2)), Tensor.FromArray([3f, 4f], new Shape(2)));
        a.RequiresGrad = b.RequiresGrad = true;
        (sum.Apply(a, b) * Tensor.FromArray([5f, 6f], new Shape(2))).Sum().Backward();
        Assert.Equal([5f, 6f], a.Grad!.ToArray<float>());
        Assert.Equal([5f, 6f], b.Grad!.ToArray<float>());
    }

    /// <summary>The output of the elementwise <paramref name="kernel"/> run by <paramref name="device"/>'s backend on
    /// F32 inputs, launched as an elementwise op is (blocks of 256 threads, the element count as its scalar).</summary>
    private static double[] RunKernel(Device device, CustomKernel kernel, params double[][] inputs)
    {
        var n = inputs[0].Length;
        var shape = new Shape(n);
        var operands = inputs.Select(v => Tensor.FromArray(v.Select(d => (float)d).ToArray(), shape, device)).ToArray();
        var y = Tensor.Empty(shape, DType.F32, device);
        device.Backend.Custom(kernel, new LaunchConfig((n + 255) / 256, 256), [.. operands.Select(t => t.View)], [y.View], [(long)n]);
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
