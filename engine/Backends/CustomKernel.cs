using System.Security.Cryptography;
using System.Text;

namespace Frugal.Backends;

/// <summary>A user-written kernel (what <c>CustomOp</c> runs through <see cref="IBackend.Custom"/>): the CUDA C
/// source that GPUs compile through the kernel cache (NVRTC) and the CPU function that the CPU backend runs. The CUDA
/// entry takes a pointer per input (<c>const</c>), a pointer per output, then the scalars, in that order:
/// <c>extern "C" __global__ void entry(const float* in0, ..., float* out0, ..., int rows, float eps, ...)</c>; the
/// source may <c>#include "common.cuh"</c>. Nothing is checked here: the op that defines it validates.</summary>
public sealed class CustomKernel(string name, string cudaSource, string entry, CustomCpuKernel cpu)
{
    /// <summary>Name in messages and the kernel cache.</summary>
    public string Name { get; } = name;

    /// <summary>The CUDA C source.</summary>
    public string CudaSource { get; } = cudaSource;

    /// <summary>The kernel's entry point in <see cref="CudaSource"/>.</summary>
    public string Entry { get; } = entry;

    /// <summary>The CPU implementation (also the reference the CUDA kernel is tested against).</summary>
    public CustomCpuKernel Cpu { get; } = cpu;

    /// <summary>The compiled module's name on a device: the name and a hash of the source, so that two kernels
    /// that share a name but not their source never share a module.</summary>
    internal string Module { get; } = $"custom/{name}-{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(cudaSource)))[..16]}";
}

/// <summary>What a custom kernel's CPU function sees: each input and output as a span of its element type (contiguous,
/// row-major), their shapes, and the scalar arguments. <see cref="Input(int)"/>, <see cref="Output"/> and
/// <see cref="Length"/> are the F32 shorthands of elementwise ops.</summary>
public readonly unsafe ref struct CustomKernelArgs
{
    private readonly string _op;
    private readonly IReadOnlyList<StridedView> _inputs;
    private readonly IReadOnlyList<StridedView> _outputs;
    private readonly IReadOnlyList<CustomScalar> _scalars;

    internal CustomKernelArgs(string op, IReadOnlyList<StridedView> inputs, IReadOnlyList<StridedView> outputs, IReadOnlyList<CustomScalar> scalars)
    {
        _op = op;
        _inputs = inputs;
        _outputs = outputs;
        _scalars = scalars;
        Length = checked((int)outputs[0].Numel);
    }

    /// <summary>Elements of the first output (in an elementwise op, of every operand).</summary>
    public int Length { get; }

    /// <summary>Number of inputs.</summary>
    public int InputCount => _inputs.Count;

    /// <summary>Number of outputs.</summary>
    public int OutputCount => _outputs.Count;

    /// <summary>Number of scalar arguments.</summary>
    public int ScalarCount => _scalars.Count;

    /// <summary>Input <paramref name="index"/>, which must be F32.</summary>
    public ReadOnlySpan<float> Input(int index) => InputSpan<float>(index);

    /// <summary>The first output, which must be F32, to fill.</summary>
    public Span<float> Output => OutputSpan<float>(0);

    /// <summary>Input <paramref name="index"/> as its element type: float, double, <see cref="Half"/>,
    /// <see cref="BFloat16"/>, sbyte, byte or int for F32, F64, F16, BF16, I8, U8, I32.</summary>
    /// <exception cref="InvalidOperationException"><typeparamref name="T"/> is not the input's element type.</exception>
    public ReadOnlySpan<T> InputSpan<T>(int index) where T : unmanaged => Elements<T>(_inputs, index, "input");

    /// <summary>Output <paramref name="index"/> as its element type (see <see cref="InputSpan{T}"/>), to fill.</summary>
    /// <exception cref="InvalidOperationException"><typeparamref name="T"/> is not the output's element type.</exception>
    public Span<T> OutputSpan<T>(int index) where T : unmanaged => Elements<T>(_outputs, index, "output");

    /// <summary>The shape of input <paramref name="index"/>.</summary>
    public Shape InputShape(int index) => Shape.Wrap(_inputs[index].Shape);

    /// <summary>The shape of output <paramref name="index"/>.</summary>
    public Shape OutputShape(int index) => Shape.Wrap(_outputs[index].Shape);

    /// <summary>Scalar argument <paramref name="index"/>.</summary>
    public CustomScalar Scalar(int index) => _scalars[index];

    private Span<T> Elements<T>(IReadOnlyList<StridedView> operands, int index, string what) where T : unmanaged
    {
        var view = operands[index];
        if (DTypes.Of<T>() != view.DType)
            throw new InvalidOperationException($"custom op '{_op}': {what} {index} is {view.DType.Name()}, not {typeof(T).Name}");
        return new Span<T>((void*)view.Data, (int)view.Numel);
    }
}

/// <summary>The CPU function of a custom kernel: fills the outputs from the inputs and scalars of
/// <paramref name="args"/>.</summary>
public delegate void CustomCpuKernel(CustomKernelArgs args);
