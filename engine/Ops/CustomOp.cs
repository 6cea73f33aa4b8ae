using Frugal.Backends.Cuda;

namespace Frugal;

/// <summary>What a custom op's CPU reference sees: its inputs and output as float spans of equal length.</summary>
public readonly unsafe ref struct CustomKernelArgs
{
    private readonly IReadOnlyList<nint> _inputs;
    private readonly nint _output;

    internal CustomKernelArgs(IReadOnlyList<nint> inputs, nint output, int length)
    {
        _inputs = inputs;
        _output = output;
        Length = length;
    }

    /// <summary>Elements per operand.</summary>
    public int Length { get; }

    /// <summary>Number of inputs.</summary>
    public int InputCount => _inputs.Count;

    /// <summary>Input <paramref name="index"/>.</summary>
    public ReadOnlySpan<float> Input(int index) => new((void*)_inputs[index], Length);

    /// <summary>The output, to fill.</summary>
    public Span<float> Output => new((void*)_output, Length);
}

/// <summary>The CPU reference of a custom op: fills <see cref="CustomKernelArgs.Output"/> from the inputs.</summary>
public delegate void CustomCpuKernel(CustomKernelArgs args);

/// <summary>The gradients of a custom op's inputs (null where none) from its inputs, output and output gradient,
/// computed with any ops, including other custom ops (a backward kernel).</summary>
public delegate Tensor?[] CustomBackward(IReadOnlyList<Tensor> inputs, Tensor output, Tensor gradOutput);

/// <summary>
/// A user-written elementwise op: CUDA C source compiled at run time through Frugal's kernel cache (NVRTC), a
/// CPU reference that also serves as the CPU implementation, and optionally a backward so that it takes part in
/// autograd. The inputs are F32 tensors of one shape on one device; the output has the same shape. The CUDA entry
/// has the signature <c>extern "C" __global__ void entry(const float* in0, ..., float* out, long long n)</c> and is
/// launched with one thread per element in blocks of <see cref="ThreadsPerBlock"/> (guard with <c>i &lt; n</c>);
/// the source may <c>#include "common.cuh"</c>.
/// </summary>
public sealed class CustomOp
{
    private readonly CustomCpuKernel _cpu;
    private readonly CustomBackward? _backward;

    /// <summary>Defines the op; nothing is compiled until it first runs on a GPU.</summary>
    public CustomOp(string name, string cudaSource, string entry, CustomCpuKernel cpu, CustomBackward? backward = null, int threadsPerBlock = 256)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentException.ThrowIfNullOrWhiteSpace(cudaSource);
        ArgumentException.ThrowIfNullOrWhiteSpace(entry);
        ArgumentNullException.ThrowIfNull(cpu);
        if (threadsPerBlock is < 32 or > 1024 || threadsPerBlock % 32 != 0)
            throw new ArgumentOutOfRangeException(nameof(threadsPerBlock), $"custom op '{name}': threads per block must be a multiple of 32 in [32, 1024], got {threadsPerBlock}");
        (Name, CudaSource, Entry, _cpu, _backward, ThreadsPerBlock) = (name, cudaSource, entry, cpu, backward, threadsPerBlock);
    }

    /// <summary>Name in messages, graph nodes and the kernel cache.</summary>
    public string Name { get; }

    /// <summary>The CUDA C source.</summary>
    public string CudaSource { get; }

    /// <summary>The kernel's entry point.</summary>
    public string Entry { get; }

    /// <summary>Threads per block of the launch.</summary>
    public int ThreadsPerBlock { get; }

    /// <summary>Runs the op on the inputs' device and records it for autograd.</summary>
    /// <exception cref="ArgumentException">No inputs.</exception>
    /// <exception cref="ShapeMismatchException">Inputs differ in shape, dtype (F32 only) or device.</exception>
    public Tensor Apply(params Tensor[] inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (inputs.Length == 0)
            throw new ArgumentException($"custom op '{Name}' needs at least one input", nameof(inputs));
        var first = inputs[0];
        foreach (var t in inputs)
        {
            Check.Live(Name, t);
            if (t.DType != DType.F32)
                throw new ShapeMismatchException($"custom op '{Name}': inputs must be f32, got {t.Describe()}");
            Check.Compatible(Name, first, t);
            if (t.Shape != first.Shape)
                throw new ShapeMismatchException($"custom op '{Name}': inputs must have one shape, got {first.Describe()} and {t.Describe()}");
        }
        var dense = inputs.Select(t => t.IsContiguous ? t.Alias() : t.Contiguous()).ToArray();
        try
        {
            var y = Tensor.Empty(first.Shape, DType.F32, first.Device);
            var addresses = dense.Select(t => t.View.Data).ToArray();
            if (first.Device.Backend is CudaBackend cuda)
            {
                cuda.LaunchCustom(Name, CudaSource, Entry, ThreadsPerBlock, addresses, y.View.Data, y.Numel);
            }
            else
            {
                if (y.Numel > int.MaxValue)
                    throw new NotSupportedException($"custom op '{Name}': the CPU reference takes at most 2^31 - 1 elements, got {y.Numel}");
                _cpu(new CustomKernelArgs(addresses, y.View.Data, (int)y.Numel));
            }
            Record(inputs, y);
            return y;
        }
        finally
        {
            foreach (var t in dense)
                t.Dispose();
        }
    }

    private void Record(Tensor[] inputs, Tensor y)
    {
        var node = Autograd.Autograd.Record(y, Name, inputs);
        if (node is null)
            return;
        if (_backward is null)
        {
            node.Backward = _ => throw new InvalidOperationException($"custom op '{Name}' has no backward: pass one to its constructor to train through it");
            return;
        }
        var saved = inputs.Select(node.Save).ToArray();
        var output = node.Save(y);
        node.Backward = g =>
        {
            var grads = _backward(saved, output, g);
            if (grads.Length != inputs.Length)
                throw new InvalidOperationException($"custom op '{Name}': backward returned {grads.Length} gradients for {inputs.Length} inputs");
            for (var i = 0; i < grads.Length; i++)
            {
                if (grads[i] is { } gi && gi.Shape != inputs[i].Shape)
                    throw new ShapeMismatchException($"custom op '{Name}': gradient {i} is {gi.Describe()}, input {i} is {inputs[i].Describe()}");
            }
            return grads;
        };
    }
}
