using System.Security.Cryptography;
using System.Text;

namespace Frugal.Backends;

/// <summary>A user-written elementwise kernel (what <c>CustomOp</c> runs through
/// <see cref="IBackend.Custom"/>): contiguous F32 operands of one length, the CUDA C source that GPUs compile
/// through the kernel cache (NVRTC) and the CPU function that the CPU backend runs. The CUDA entry has the
/// signature <c>extern "C" __global__ void entry(const float* in0, ..., float* out, long long n)</c> and is
/// launched with one thread per element in blocks of <see cref="ThreadsPerBlock"/> (guard with <c>i &lt; n</c>);
/// the source may <c>#include "common.cuh"</c>. Nothing is checked here: the op that defines it validates.</summary>
public sealed class CustomKernel(string name, string cudaSource, string entry, CustomCpuKernel cpu, int threadsPerBlock)
{
    /// <summary>Name in messages and the kernel cache.</summary>
    public string Name { get; } = name;

    /// <summary>The CUDA C source.</summary>
    public string CudaSource { get; } = cudaSource;

    /// <summary>The kernel's entry point in <see cref="CudaSource"/>.</summary>
    public string Entry { get; } = entry;

    /// <summary>The CPU implementation (also the reference the CUDA kernel is tested against).</summary>
    public CustomCpuKernel Cpu { get; } = cpu;

    /// <summary>Threads per block of the CUDA launch.</summary>
    public int ThreadsPerBlock { get; } = threadsPerBlock;

    /// <summary>The compiled module's name on a device: the name and a hash of the source, so that two kernels
    /// that share a name but not their source never share a module.</summary>
    internal string Module { get; } = $"custom/{name}-{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(cudaSource)))[..16]}";
}

/// <summary>What a custom kernel's CPU function sees: its inputs and output as float spans of equal length.</summary>
public readonly unsafe ref struct CustomKernelArgs
{
    private readonly IReadOnlyList<StridedView> _inputs;
    private readonly nint _output;

    internal CustomKernelArgs(IReadOnlyList<StridedView> inputs, StridedView output)
    {
        _inputs = inputs;
        _output = output.Data;
        Length = checked((int)output.Numel);
    }

    /// <summary>Elements per operand.</summary>
    public int Length { get; }

    /// <summary>Number of inputs.</summary>
    public int InputCount => _inputs.Count;

    /// <summary>Input <paramref name="index"/>.</summary>
    public ReadOnlySpan<float> Input(int index) => new((void*)_inputs[index].Data, Length);

    /// <summary>The output, to fill.</summary>
    public Span<float> Output => new((void*)_output, Length);
}

/// <summary>The CPU function of a custom kernel: fills <see cref="CustomKernelArgs.Output"/> from the inputs.</summary>
public delegate void CustomCpuKernel(CustomKernelArgs args);
