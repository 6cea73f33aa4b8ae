using Frugal.Backends;

namespace Frugal;

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
        Kernel = new CustomKernel(name, cudaSource, entry, cpu, threadsPerBlock);
        _backward = backward;
    }

    /// <summary>The kernel every backend runs through <see cref="IBackend.Custom"/>.</summary>
    public CustomKernel Kernel { get; }

    /// <summary>Name in messages, graph nodes and the kernel cache.</summary>
    public string Name => Kernel.Name;

    /// <summary>The CUDA C source.</summary>
    public string CudaSource => Kernel.CudaSource;

    /// <summary>The kernel's entry point.</summary>
    public string Entry => Kernel.Entry;

    /// <summary>Threads per block of the launch.</summary>
    public int ThreadsPerBlock => Kernel.ThreadsPerBlock;

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
            first.Backend.Custom(Kernel, [.. dense.Select(t => t.View)], y.View);
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
        var node = Autograd.Record(y, Name, inputs);
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
