// The README's snippets, each exactly as written there (tests/ReadmeSamplesTests.cs checks that they are), with
// what each one takes from the text around it declared in its scope.
using Frugal;
using Frugal.Data;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Distillation;
using Frugal.Formats; using Frugal.Training.Sparsity;

var csr = WeightFormat.Csr(density: 0.1);              // or WeightFormat.Bsr(density: 0.1, block: 16)
using var sparse = new Sequential(
    new Flatten(), new Linear(784, 512, csr), new ReLU(),   // a SparseWeight: 10% of the values, gradients, Adam state
    new Linear(512, 512, csr), new ReLU(), new Linear(512, 10));
using var adam = new Adam(sparse.Parameters(), lr: 2e-3);
var rigl = new RigL(sparse, adam, updateEvery: 100, dropFraction: 0.3, endStep: 3500);
// ... the same loop, with rigl.Step() after adam.ZeroGrad()

{
using var trainedDenseModel = new Sequential(new Flatten(), new Linear(784, 64), new ReLU(), new Linear(64, 10));
using var x = Tensor.Uniform(new Shape(8, 1, 28, 28), -1, 1, 1);
using var y = Tensor.FromArray(new int[8], new Shape(8));
var low = WeightFormat.LowRank(0.25);                  // or LowRank(rank: 64)
var hidden = new Linear(512, 512, low);               // a LowRankWeight: U [512, 64]·Vᵀ [64, 512], never formed
using var student = new Sequential(new Flatten(), new Linear(784, 512, low), new ReLU(),
    hidden, new ReLU(), new Shared(hidden), new ReLU(), new Linear(512, 10));   // ALBERT: one weight, used twice
var teacher = new Teacher(trainedDenseModel, temperature: 4, alpha: 0.9);
var loss = teacher.Loss(x, student.Forward(x), y);     // α·T²·KL(teacher ‖ student) + (1 − α)·CE
}
{
using var x = Tensor.Uniform(new Shape(16), -1, 1, 2);
const string source = """
    extern "C" __global__ void scaled_square(const float* x, float* y, long long n) {
        long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
        if (i < n) y[i] = 3.0f * x[i] * x[i];
    }
    """;
var scaledSquare = new CustomOp("scaled_square", source, "scaled_square",
    cpu: a => { for (var i = 0; i < a.Length; i++) a.Output[i] = 3f * a.Input(0)[i] * a.Input(0)[i]; },
    backward: (inputs, _, g) => [g * inputs[0] * 6.0]);
var y = scaledSquare.Apply(x);                     // on x's device; recorded for autograd
}
{
using var x = Tensor.Uniform(new Shape(4, 300), -1, 1, 3);
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
var outputs = l2Normalize.ApplyAll(x);               // [y, norm] on x's device; recorded for autograd
}
{
var device = Device.Cpu;
using var model = new Sequential(new Flatten(), new Linear(784, 10));
using var profiler = MemoryProfiler.Start(device);   // one per device; resets the allocator's peaks
profiler.Mark("step 1 forward");                      // labels the events that follow
// ... train ...
var report = profiler.Report(model.FormatsByPath());  // Peak, Current, LiveAtPeak, PerModule, PerFormat, Timeline
}
