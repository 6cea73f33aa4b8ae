using Frugal.Backends;

namespace Frugal;

/// <summary>The gradients of an elementwise custom op's inputs (null where none) from its inputs, output and output
/// gradient, computed with any ops, including other custom ops (a backward kernel).</summary>
public delegate Tensor?[] CustomBackward(IReadOnlyList<Tensor> inputs, Tensor output, Tensor gradOutput);

/// <summary>The gradients of a custom op's inputs, one per input (null where none; always null for an integer input),
/// each of its input's shape and dtype, from the inputs, all outputs and the outputs' gradients. A gradient is null
/// where its output received none: an integer output, or one that the loss does not use.</summary>
public delegate Tensor?[] CustomMultiBackward(IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> outputs, IReadOnlyList<Tensor?> gradOutputs);

/// <summary>
/// A user-written op: CUDA C source compiled at run time through Frugal's kernel cache (NVRTC), a CPU function that
/// is both the CPU implementation and the reference, and optionally a backward so that it takes part in autograd.
/// <para>The general form declares the dtypes of its inputs and outputs and three rules over the inputs' shapes: the
/// outputs' shapes, the launch (grid, block, dynamic shared memory) and the scalar arguments. The CUDA entry takes a
/// pointer per input, a pointer per output, then the scalars:
/// <c>extern "C" __global__ void entry(const float* x, float* y, float* rowMax, int rows, int cols)</c>.</para>
/// <para>The elementwise form is the special case of F32 inputs of one shape (any number of them), one F32 output of
/// that shape, one thread per element in blocks of <see cref="ThreadsPerBlock"/> and the element count as the one
/// scalar: <c>entry(const float* in0, ..., float* out, long long n)</c> (guard with <c>i &lt; n</c>).</para>
/// The source may <c>#include "common.cuh"</c>. Non-contiguous inputs are made contiguous first.
/// </summary>
public sealed class CustomOp
{
    private readonly DType[] _inputs;
    private readonly bool _variadic;
    private readonly DType[] _outputs;
    private readonly Func<IReadOnlyList<Shape>, IReadOnlyList<Shape>> _outputShapes;
    private readonly Func<IReadOnlyList<Shape>, LaunchConfig> _launch;
    private readonly Func<IReadOnlyList<Shape>, IReadOnlyList<CustomScalar>>? _scalars;
    private readonly CustomMultiBackward? _backward;

    /// <summary>Defines an elementwise op; nothing is compiled until it first runs on a GPU.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="threadsPerBlock"/> is not a multiple of 32 in [32, 1024].</exception>
    public CustomOp(string name, string cudaSource, string entry, CustomCpuKernel cpu, CustomBackward? backward = null, int threadsPerBlock = 256)
        : this(name, cudaSource, entry, [DType.F32], variadic: true, [DType.F32], OneShape(name), PerElement(name, threadsPerBlock),
            shapes => [shapes[0].Numel], cpu, backward is null ? null : (inputs, outputs, grads) => backward(inputs, outputs[0], grads[0]!))
        => ThreadsPerBlock = threadsPerBlock;

    /// <summary>Defines an op with its own launch, several inputs and outputs of any dtype, and scalar arguments;
    /// nothing is compiled until it first runs on a GPU.</summary>
    /// <param name="name">Name in messages, graph nodes and the kernel cache.</param>
    /// <param name="cudaSource">The CUDA C source.</param>
    /// <param name="entry">The <c>extern "C" __global__</c> function to launch.</param>
    /// <param name="inputs">The dtype of each input, in order (the op takes exactly these).</param>
    /// <param name="outputs">The dtype of each output, in order.</param>
    /// <param name="outputShapes">The shape of each output from the inputs' shapes.</param>
    /// <param name="launch">The CUDA launch from the inputs' shapes (at most <see cref="LaunchConfig.MaxThreadsPerBlock"/>
    /// threads a block, <see cref="LaunchConfig.MaxSharedBytes"/> of dynamic shared memory); a grid with a zero
    /// extent launches nothing.</param>
    /// <param name="cpu">The CPU function, which fills the outputs.</param>
    /// <param name="scalars">The scalar arguments from the inputs' shapes (none when null); constants such as an
    /// epsilon belong in its closure.</param>
    /// <param name="backward">The input gradients; without it the op cannot be trained through.</param>
    /// <exception cref="ArgumentException">A name, source or entry is empty, or no inputs or outputs are declared.</exception>
    public CustomOp(string name, string cudaSource, string entry, IReadOnlyList<DType> inputs, IReadOnlyList<DType> outputs,
        Func<IReadOnlyList<Shape>, IReadOnlyList<Shape>> outputShapes, Func<IReadOnlyList<Shape>, LaunchConfig> launch, CustomCpuKernel cpu,
        Func<IReadOnlyList<Shape>, IReadOnlyList<CustomScalar>>? scalars = null, CustomMultiBackward? backward = null)
        : this(name, cudaSource, entry, [.. inputs ?? throw new ArgumentNullException(nameof(inputs))], variadic: false,
            [.. outputs ?? throw new ArgumentNullException(nameof(outputs))], outputShapes, launch, scalars, cpu, backward)
    {
    }

    private CustomOp(string name, string cudaSource, string entry, DType[] inputs, bool variadic, DType[] outputs,
        Func<IReadOnlyList<Shape>, IReadOnlyList<Shape>> outputShapes, Func<IReadOnlyList<Shape>, LaunchConfig> launch,
        Func<IReadOnlyList<Shape>, IReadOnlyList<CustomScalar>>? scalars, CustomCpuKernel cpu, CustomMultiBackward? backward)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentException.ThrowIfNullOrWhiteSpace(cudaSource);
        ArgumentException.ThrowIfNullOrWhiteSpace(entry);
        ArgumentNullException.ThrowIfNull(outputShapes);
        ArgumentNullException.ThrowIfNull(launch);
        ArgumentNullException.ThrowIfNull(cpu);
        if (inputs.Length == 0 || outputs.Length == 0)
            throw new ArgumentException($"custom op '{name}' declares {inputs.Length} inputs and {outputs.Length} outputs; it needs at least one of each");
        foreach (var t in inputs.Concat(outputs))
        {
            if (!Enum.IsDefined(t))
                throw new ArgumentOutOfRangeException(nameof(inputs), t, $"custom op '{name}': no dtype {(int)t}");
        }
        Kernel = new CustomKernel(name, cudaSource, entry, cpu);
        _inputs = inputs;
        _variadic = variadic;
        _outputs = outputs;
        _outputShapes = outputShapes;
        _launch = launch;
        _scalars = scalars;
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

    /// <summary>Threads per block of an elementwise op's launch; 0 for an op with its own launch rule.</summary>
    public int ThreadsPerBlock { get; }

    /// <summary>Runs an op with one output on the inputs' device and records it for autograd.</summary>
    /// <exception cref="InvalidOperationException">The op has several outputs (use <see cref="ApplyAll"/>), or a rule
    /// gave outputs or a launch that cannot be.</exception>
    /// <exception cref="ArgumentException">Not the declared number of inputs, or inputs on different devices.</exception>
    /// <exception cref="ShapeMismatchException">An input is not of its declared dtype (or, elementwise, of the first's shape).</exception>
    public Tensor Apply(params Tensor[] inputs)
    {
        if (_outputs.Length != 1)
            throw new InvalidOperationException($"custom op '{Name}' has {_outputs.Length} outputs; ApplyAll returns them all");
        return ApplyAll(inputs)[0];
    }

    /// <summary>Runs the op on the inputs' device and records it for autograd (the outputs of a float dtype; integer
    /// outputs take no gradient); returns the outputs in their declared order.</summary>
    /// <exception cref="InvalidOperationException">A rule gave outputs or a launch that cannot be.</exception>
    /// <exception cref="ArgumentException">Not the declared number of inputs, or inputs on different devices.</exception>
    /// <exception cref="ShapeMismatchException">An input is not of its declared dtype (or, elementwise, of the first's shape).</exception>
    public Tensor[] ApplyAll(params Tensor[] inputs)
    {
        CheckInputs(inputs);
        Shape[] shapes = [.. inputs.Select(t => t.Shape)];
        var outputShapes = OutputShapes(shapes, inputs);
        CustomScalar[] scalars = _scalars is null ? []
            : [.. _scalars(shapes) ?? throw new InvalidOperationException($"custom op '{Name}': the scalar rule returned null for inputs {Describe(inputs)}")];
        var launch = _launch(shapes);
        if (launch.Refusal() is { } refusal)
            throw new InvalidOperationException($"custom op '{Name}': the launch rule gave {launch} for inputs {Describe(inputs)}: {refusal}");
        CheckParameterBytes(inputs, scalars);

        var device = inputs[0].Device;
        var dense = inputs.Select(t => t.IsContiguous ? t.Alias() : t.Contiguous()).ToArray();
        var outputs = new List<Tensor>(_outputs.Length);
        try
        {
            for (var k = 0; k < _outputs.Length; k++)
                outputs.Add(Tensor.Empty(outputShapes[k], _outputs[k], device));
            device.Backend.Custom(Kernel, launch, [.. dense.Select(t => t.View)], [.. outputs.Select(t => t.View)], scalars);
            Record(inputs, [.. outputs]);
            return [.. outputs];
        }
        catch
        {
            foreach (var y in outputs)
                y.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in dense)
                t.Dispose();
        }
    }

    private void CheckInputs(Tensor[] inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (_variadic ? inputs.Length == 0 : inputs.Length != _inputs.Length)
        {
            var wanted = _variadic ? $"one or more {_inputs[0].Name()} inputs" : $"{_inputs.Length} inputs ({string.Join(", ", _inputs.Select(t => t.Name()))})";
            throw new ArgumentException($"custom op '{Name}' takes {wanted}, got {inputs.Length}: {Describe(inputs)}", nameof(inputs));
        }
        for (var i = 0; i < inputs.Length; i++)
        {
            var t = inputs[i] ?? throw new ArgumentNullException(nameof(inputs), $"custom op '{Name}': input {i} is null");
            Check.Live(Name, t);
            var dtype = _inputs[Math.Min(i, _inputs.Length - 1)];
            if (t.DType != dtype)
                throw new ShapeMismatchException($"custom op '{Name}': input {i} must be {dtype.Name()}, got {t.Describe()}");
            if (!ReferenceEquals(t.Device, inputs[0].Device))
                throw new ArgumentException($"custom op '{Name}': inputs are on different devices: {Describe(inputs)}");
        }
    }

    private Shape[] OutputShapes(Shape[] shapes, Tensor[] inputs)
    {
        var result = _outputShapes(shapes);
        if (result is null || result.Count != _outputs.Length)
            throw new InvalidOperationException($"custom op '{Name}': the output rule gave {result?.Count ?? 0} shapes for {_outputs.Length} outputs, from inputs {Describe(inputs)}");
        for (var k = 0; k < result.Count; k++)
        {
            try
            {
                long bytes = _outputs[k].SizeOf();
                foreach (var d in result[k])
                    bytes = checked(bytes * d);
            }
            catch (OverflowException)
            {
                throw new InvalidOperationException($"custom op '{Name}': the output rule gave output {k} the shape {result[k]}, too large to allocate, from inputs {Describe(inputs)}");
            }
        }
        return [.. result];
    }

    /// <summary>CUDA passes at most 4 KiB of kernel parameters; each is aligned to its own size.</summary>
    private void CheckParameterBytes(Tensor[] inputs, CustomScalar[] scalars)
    {
        const int limit = 4096;
        var bytes = 8 * (inputs.Length + _outputs.Length);
        foreach (var s in scalars)
            bytes = (bytes + s.Size - 1) / s.Size * s.Size + s.Size;
        if (bytes > limit)
            throw new InvalidOperationException($"custom op '{Name}': {inputs.Length} inputs, {_outputs.Length} outputs and {scalars.Length} scalars take {bytes} bytes of kernel parameters, more than CUDA's {limit}");
    }

    private void Record(Tensor[] inputs, Tensor[] outputs)
    {
        var node = Autograd.Record([.. outputs.Select(y => y.DType.IsFloat() ? y : null)], Name, inputs);
        if (node is null)
            return;
        Func<Tensor?[], Tensor?[]> backward;
        if (_backward is null)
        {
            backward = _ => throw new InvalidOperationException($"custom op '{Name}' has no backward: pass one to its constructor to train through it");
        }
        else
        {
            var savedInputs = inputs.Select(node.Save).ToArray();
            var savedOutputs = outputs.Select(node.Save).ToArray();
            backward = g => Gradients(_backward(savedInputs, savedOutputs, g), savedInputs, [.. savedOutputs, .. g]);
        }
        node.BackwardOutputs = backward;   // the engine runs this one with several outputs,
        node.Backward = g => backward([g]);   // this one with one
    }

    /// <summary>Checks what the backward returned against the inputs; a gradient that is one of the tensors it was
    /// given, or returned twice, becomes an alias (the engine owns and frees each gradient).</summary>
    private Tensor?[] Gradients(Tensor?[] grads, Tensor[] inputs, Tensor?[] given)
    {
        if (grads is null || grads.Length != inputs.Length)
            throw new InvalidOperationException($"custom op '{Name}': backward returned {grads?.Length ?? 0} gradients for {inputs.Length} inputs");
        for (var i = 0; i < grads.Length; i++)
        {
            if (grads[i] is not { } gi)
                continue;
            var x = inputs[i];
            if (!x.DType.IsFloat())
                throw new InvalidOperationException($"custom op '{Name}': backward returned gradient {i} {gi.Describe()} for input {i} {x.Describe()}, which takes none (return null)");
            if (gi.Shape != x.Shape || gi.DType != x.DType || !ReferenceEquals(gi.Device, x.Device))
                throw new ShapeMismatchException($"custom op '{Name}': gradient {i} is {gi.Describe()}, input {i} is {x.Describe()}");
            if (given.Concat(inputs).Concat(grads.Take(i)).Any(t => ReferenceEquals(t, gi)))
                grads[i] = gi.Alias();
        }
        return grads;
    }

    private static string Describe(Tensor[] inputs) => inputs.Length == 0 ? "none" : string.Join(", ", inputs.Select(t => t?.Describe() ?? "null"));

    // ---- the elementwise special case ----

    private static Func<IReadOnlyList<Shape>, IReadOnlyList<Shape>> OneShape(string name) => shapes =>
    {
        foreach (var s in shapes)
        {
            if (s != shapes[0])
                throw new ShapeMismatchException($"custom op '{name}': inputs must have one shape, got {shapes[0]} and {s}");
        }
        return [shapes[0]];
    };

    private static Func<IReadOnlyList<Shape>, LaunchConfig> PerElement(string name, int threadsPerBlock)
    {
        if (threadsPerBlock is < 32 or > 1024 || threadsPerBlock % 32 != 0)
            throw new ArgumentOutOfRangeException(nameof(threadsPerBlock), $"custom op '{name}': threads per block must be a multiple of 32 in [32, 1024], got {threadsPerBlock}");
        return shapes =>
        {
            var blocks = (shapes[0].Numel + threadsPerBlock - 1) / threadsPerBlock;
            if (blocks > int.MaxValue)
                throw new InvalidOperationException($"custom op '{name}': {shapes[0].Numel} elements need more than 2^31 - 1 blocks of {threadsPerBlock} threads");
            return new LaunchConfig((int)blocks, threadsPerBlock);
        };
    }
}
