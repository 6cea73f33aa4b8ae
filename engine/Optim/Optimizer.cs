using Frugal.Memory;

namespace Frugal.Optim;

/// <summary>Base of the optimizers: the parameters, a learning rate that schedules may change, and per-parameter
/// state tensors allocated lazily on the first step as OptimizerState memory owned by "param.state".</summary>
public abstract class Optimizer : IDisposable
{
    private readonly Dictionary<(Tensor, string), Tensor> _state = new();
    private readonly Dictionary<(Tensor, string), long> _createdAt = new();
    private readonly List<Tensor> _parameters;
    private bool _disposed;
    private bool _inBackward;

    /// <summary>Optimizes <paramref name="parameters"/> with learning rate <paramref name="lr"/>.</summary>
    protected Optimizer(IEnumerable<Tensor> parameters, double lr)
    {
        _parameters = [.. parameters];
        if (Parameters.Count == 0)
            throw new ArgumentException($"{GetType().Name}: no parameters to optimize");
        if (Parameters.Distinct().Count() != Parameters.Count)
            throw new ArgumentException($"{GetType().Name}: a parameter is listed twice");
        foreach (var p in Parameters)
        {
            if (!p.DType.IsComputeType() && p.Packing is null)
                throw new ArgumentException($"{GetType().Name}: parameter {p.Describe()} must be f32 or f64 (or the codes of a master-free quantized weight)");
        }
        if (lr <= 0 || double.IsNaN(lr))
            throw new ArgumentOutOfRangeException(nameof(lr), $"{GetType().Name}: learning rate must be positive, got {lr}");
        Lr = lr;
        BaseLr = lr;
    }

    /// <summary>The optimized parameters.</summary>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <summary>Current learning rate.</summary>
    public double Lr { get; set; }

    /// <summary>Learning rate given at construction (schedules scale it).</summary>
    public double BaseLr { get; }

    /// <summary>Steps taken.</summary>
    public long StepCount { get; internal set; }

    /// <summary>Applies one update to every parameter that has a gradient.</summary>
    public void Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        StepCount++;
        using var noGrad = Autograd.NoGrad();
        foreach (var p in Parameters)
        {
            if (p.Grad is { } g)
                UpdateChecked(p, g);
        }
    }

    /// <summary>Values per chunk of an update. Updates run chunk by chunk so that their F32 transients (the
    /// dequantized moments of 8-bit states, the values of a master-free quantized weight) stay small: 16,384 values,
    /// a multiple of <see cref="Adam.StateBlock"/>, 64 KiB per F32 transient.</summary>
    public const int ChunkValues = 8 * Adam.StateBlock;

    private void UpdateChecked(Tensor p, Tensor g)
    {
        if (p.Packing is { } packed)
        {
            UpdatePacked(p, packed, g);
            return;
        }
        if (g.Shape != p.Shape || g.DType != p.DType || !g.IsContiguous || !p.IsContiguous)
            throw new InvalidOperationException($"{GetType().Name}: gradient {g.Describe()} does not match parameter {p.Describe()} (both must be contiguous and alike)");
        InChunks(p, g, 0, (v, gc, offset) => Update(p, v, gc, offset));
    }

    /// <summary>Calls <paramref name="body"/>(values, gradient, offset) over flat chunks of
    /// <paramref name="chunk"/> (by default <see cref="ChunkValues"/>) values of <paramref name="values"/> and
    /// <paramref name="grad"/> (contiguous, alike), the offsets counted from <paramref name="offset"/>.</summary>
    protected static void InChunks(Tensor values, Tensor grad, long offset, Action<Tensor, Tensor, long> body, int chunk = ChunkValues)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(grad);
        ArgumentNullException.ThrowIfNull(body);
        using var flatValues = values.Reshape(-1);
        using var flatGrad = grad.Reshape(-1);
        for (var start = 0; start < values.Numel; start += chunk)
        {
            var count = (int)Math.Min(chunk, values.Numel - start);
            using var v = flatValues.Narrow(0, start, count);
            using var g = flatGrad.Narrow(0, start, count);
            body(v, g, offset + start);
        }
    }

    /// <summary>Master-free update of packed codes, a chunk of whole rows at a time: the rows' values are dequantized
    /// into F32 Workspace, updated by this optimizer's rule (state kept per value), and written back into the codes
    /// with stochastic rounding (scales re-estimated per group), so an update survives rounding in expectation however
    /// small it is. Chunks start at multiples of <see cref="Adam.StateBlock"/> values.</summary>
    private void UpdatePacked(Tensor p, Formats.PackedWeight packed, Tensor g)
    {
        if (g.Shape != packed.LogicalShape || g.DType != DType.F32 || !g.IsContiguous)
            throw new InvalidOperationException($"{GetType().Name}: gradient {g.Describe()} does not match the packed weight {p.Describe()} (f32 {packed.LogicalShape})");
        if (UpdatePackedInPlace(p, packed, g))
            return;
        using var grads = g.Reshape(-1);
        using var work = MemoryContext.Use(MemoryCategory.Workspace, $"{p.Name ?? "param"}.update");
        packed.UpdateInChunks(ChunkValues, Adam.StateBlock, (values, offset) =>
        {
            using var gc = grads.Narrow(0, checked((int)offset), checked((int)values.Numel));
            Update(p, values, gc, offset);
        });
    }

    /// <summary>Steps the master-free weight <paramref name="parameter"/> with one backend op that steps and
    /// requantizes its codes itself, without F32 Workspace, where this optimizer has one for it; false leaves it to the
    /// chunked path through <see cref="Update"/>.</summary>
    private protected virtual bool UpdatePackedInPlace(Tensor parameter, Formats.PackedWeight packed, Tensor grad) => false;

    /// <summary>
    /// Update in backward (as LOMO and PyTorch's optimizer-in-backward): inside the returned scope, the one
    /// <c>Backward()</c> applies each parameter's update as soon as its gradient is complete and frees that gradient
    /// at once, so the gradients of all layers never coexist. The scope counts as one <see cref="Step"/>.
    /// Accumulation over micro-batches is refused: every parameter must start without a gradient, and a second
    /// backward in the same scope throws before computing anything.
    /// </summary>
    /// <exception cref="InvalidOperationException">A parameter already holds a gradient.</exception>
    public IDisposable StepInBackward()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Parameters.FirstOrDefault(p => p.Grad is not null) is { } held)
            throw new InvalidOperationException($"{GetType().Name}.StepInBackward: {held.Describe()} already holds a gradient; update in backward cannot accumulate gradients over micro-batches (call ZeroGrad, or use Step)");
        StepCount++;
        return new InBackward(this);
    }

    private sealed class InBackward : IGradientHook, IDisposable
    {
        private readonly Optimizer _optimizer;
        private readonly HashSet<Tensor> _parameters;
        private readonly Autograd.HookScope _hook;
        private bool _ran;

        public InBackward(Optimizer optimizer)
        {
            _optimizer = optimizer;
            optimizer._inBackward = true;
            _parameters = new HashSet<Tensor>(optimizer.Parameters, ReferenceEqualityComparer.Instance);
            _hook = Autograd.Hook(this);
        }

        public void BackwardStarting()
        {
            if (_ran)
                throw new InvalidOperationException($"{_optimizer.GetType().Name}.StepInBackward: a second backward in one scope would accumulate over micro-batches, which update in backward refuses; open a new scope per backward");
            _ran = true;
        }

        public void GradientReady(Tensor leaf)
        {
            if (!_parameters.Contains(leaf) || leaf.Grad is not { } g)
                return;
            using (Autograd.NoGrad())
                _optimizer.UpdateChecked(leaf, g);
            leaf.Grad = null;
        }

        public void Dispose()
        {
            _optimizer._inBackward = false;
            _hook.Dispose();
        }
    }

    /// <summary>Scales every gradient by min(1, <paramref name="maxNorm"/> / (‖g‖ + 1e-6)), where ‖g‖ is the L2 norm
    /// of all the parameters' gradients together (PyTorch's clip_grad_norm_); returns ‖g‖ before clipping. Call
    /// between backward and <see cref="Step"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">maxNorm is not positive.</exception>
    /// <exception cref="InvalidOperationException">Inside <see cref="StepInBackward"/>: each update is applied before
    /// the global norm is known, so clipping by it is refused.</exception>
    public double ClipGradNorm(double maxNorm)
    {
        if (!(maxNorm > 0))
            throw new ArgumentOutOfRangeException(nameof(maxNorm), $"{GetType().Name}.ClipGradNorm: the maximum norm must be positive, got {maxNorm}");
        if (_inBackward)
            throw new InvalidOperationException($"{GetType().Name}.ClipGradNorm: update in backward applies each update before all gradients exist, so the global norm cannot clip them; clip without update in backward");
        using var noGrad = Autograd.NoGrad();
        using var work = MemoryContext.Use(MemoryCategory.Workspace, "clip_grad_norm");
        double squares = 0;
        foreach (var g in Parameters.Select(p => p.Grad).OfType<Tensor>())
        {
            using var sq = g * g;
            using var sum = F.Sum(sq);
            squares += sum.Item();
        }
        var norm = Math.Sqrt(squares);
        var coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
        {
            foreach (var g in Parameters.Select(p => p.Grad).OfType<Tensor>())
            {
                using var scaled = g.Mul(coefficient);
                F.CopyInto(g, scaled);
            }
        }
        return norm;
    }

    /// <summary>Back-propagates <paramref name="loss"/> and applies one update: during the backward when
    /// <paramref name="inBackward"/> (see <see cref="StepInBackward"/>), else with <see cref="Step"/> after it; then
    /// drops the gradients. <paramref name="afterBackward"/> runs between the backward and the step (with updates in
    /// backward, after both).</summary>
    public void BackwardAndStep(Tensor loss, bool inBackward = false, Action? afterBackward = null)
    {
        ArgumentNullException.ThrowIfNull(loss);
        if (inBackward)
        {
            using (StepInBackward())
                loss.Backward();
            afterBackward?.Invoke();
        }
        else
        {
            loss.Backward();
            afterBackward?.Invoke();
            Step();
        }
        ZeroGrad();
    }

    /// <summary>Updates values [offset, offset + n) of one parameter in place from their gradient: a flat view of
    /// the parameter's own values, or for a master-free quantized weight F32 values that the base class writes back
    /// into the codes. <paramref name="parameter"/> keys the state; <see cref="StateSlice"/> gives the matching
    /// part of a state tensor. Chunks start at multiples of <see cref="Adam.StateBlock"/>.</summary>
    protected abstract void Update(Tensor parameter, Tensor values, Tensor grad, long offset);

    /// <summary>Drops every parameter's gradient (frees gradient memory).</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters)
            p.Grad = null;
    }

    /// <summary>Values [offset, offset + n) of the state <paramref name="name"/> of <paramref name="p"/> (one state value
    /// per parameter value, F32 or F64 as the values), created as zeros on first use; <paramref name="fresh"/> is
    /// true during the step that created it. The caller disposes the returned view.</summary>
    protected Tensor StateSlice(Tensor p, Tensor values, long offset, string name, out bool fresh)
    {
        var state = State(p, name, p.GradShape, values.DType, out fresh);
        using var flat = state.Reshape(-1);
        return flat.Narrow(0, checked((int)offset), checked((int)values.Numel));
    }

    /// <summary>The state tensor <paramref name="name"/> of <paramref name="p"/> with its own shape and dtype (a
    /// quantized state's codes and scales), created as zeros on first use; <paramref name="created"/> is true during
    /// the step that created it.</summary>
    protected Tensor State(Tensor p, string name, Shape shape, DType dtype, out bool created)
    {
        ArgumentNullException.ThrowIfNull(p);
        if (_state.TryGetValue((p, name), out var s))
        {
            if (!ReferenceEquals(s.Device, p.Device))
                throw new InvalidOperationException($"{GetType().Name}: the state '{name}' of {p.Name ?? "a parameter"} is on {s.Device}, the parameter on {p.Device}: after moving the model with To(device), move the optimizer with To(device) too");
            created = _createdAt[(p, name)] == StepCount;
            return s;
        }
        s = Tensor.Zeros(shape, dtype, p.Device, MemoryCategory.OptimizerState, $"{p.Name ?? "param"}.{name}");
        s.DetachFromScope();
        _state[(p, name)] = s;
        _createdAt[(p, name)] = StepCount;
        created = true;
        return s;
    }

    /// <summary>The name of the state holding a parameter's momentum (first moment), or null when this optimizer keeps
    /// none (plain SGD): what sparse momentum (SNFS) reads.</summary>
    protected virtual string? MomentumState => null;

    /// <summary>The momentum (first moment) state of <paramref name="parameter"/>, one F32 value per parameter value,
    /// or null before the first step or when this optimizer keeps none.</summary>
    /// <exception cref="NotSupportedException">The momentum of <paramref name="parameter"/> is (or will be)
    /// blockwise-quantized (Adam's 8-bit states): it is codes and block scales, not a tensor of values, so sparse
    /// momentum (SNFS), which reads it, refuses 8-bit states rather than read codes as momentum.</exception>
    public Tensor? MomentumOf(Tensor parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        if (MomentumState is not { } name)
            return null;
        if (QuantizesState(parameter))
            throw new NotSupportedException($"{GetType().Name}: the momentum of {parameter.Describe()} is blockwise-quantized (8-bit optimizer states), codes and block scales rather than one value per weight; sparse momentum (SNFS) reads it, so use 32-bit optimizer states with SNFS");
        return _state.TryGetValue((parameter, name), out var s) ? s : null;
    }

    /// <summary>True when the state of <paramref name="parameter"/> is (or, before its first step, will be) held in
    /// blockwise-quantized tensors of their own layout rather than one value per parameter value.</summary>
    protected virtual bool QuantizesState(Tensor parameter) => false;

    /// <summary>True when this optimizer keeps a momentum state.</summary>
    public bool HasMomentum => MomentumState is not null;

    /// <summary>Rearranges the state of a parameter whose entries were moved (a sparse pattern update): entry k of
    /// every state tensor becomes old entry <paramref name="source"/>[k], or zero where that is -1 (a new entry
    /// starts with zeroed state, as regrown weights do in SET and RigL).</summary>
    /// <exception cref="ArgumentException">The parameter is not optimized here, or the map's length or an index is wrong.</exception>
    public void RemapState(Tensor parameter, ReadOnlySpan<int> source) => ReplaceParameter(parameter, parameter, source);

    /// <summary>Optimizes <paramref name="replacement"/> in place of <paramref name="parameter"/> (a sparse layer whose
    /// number of stored values changed), carrying the state over as <see cref="RemapState"/> does: entry k of the
    /// replacement's state is old entry <paramref name="source"/>[k], or zero where that is -1.</summary>
    /// <exception cref="ArgumentException">The parameter is not optimized here, the replacement already is, or the
    /// map's length or an index is wrong.</exception>
    public void ReplaceParameter(Tensor parameter, Tensor replacement, ReadOnlySpan<int> source)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        ArgumentNullException.ThrowIfNull(replacement);
        var name = GetType().Name;
        if (source.Length != replacement.Numel)
            throw new ArgumentException($"{name}: {source.Length} map entries for {replacement.Describe()} ({replacement.Numel} elements)");
        foreach (var k in source)
        {
            if (k < -1 || k >= parameter.Numel)
                throw new ArgumentException($"{name}: source index {k} is outside [-1, {parameter.Numel})");
        }
        var map = source.ToArray();
        ReplaceParameter(parameter, replacement, (values, _) => [.. map.Select(k => k < 0 ? 0.0 : values[k])]);
    }

    /// <summary>Optimizes <paramref name="replacement"/> in place of <paramref name="parameter"/>, each state tensor
    /// becoming <paramref name="transform"/>(old values, is a second moment) (row-major, as many values as the
    /// replacement has): a low-rank layer whose rank changed maps its moments with the factors' change of basis.
    /// Blockwise-quantized states (Adam's 8-bit moments) are dequantized, mapped the same way and quantized back in
    /// the layout of the replacement's size (see <see cref="MoveQuantizedState"/>).</summary>
    /// <exception cref="ArgumentException">The parameter is not optimized here, the replacement already is, or the
    /// transform gives the wrong number of values.</exception>
    public void ReplaceParameter(Tensor parameter, Tensor replacement, Func<double[], bool, double[]> transform)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        ArgumentNullException.ThrowIfNull(replacement);
        ArgumentNullException.ThrowIfNull(transform);
        var name = GetType().Name;
        var at = _parameters.IndexOf(parameter);
        if (at < 0)
            throw new ArgumentException($"{name}: {parameter.Describe()} is not one of its parameters");
        if (parameter.Packing is not null)
            throw new NotSupportedException($"{name}: {parameter.Describe()} is a master-free quantized weight; its state cannot follow a change of pattern or rank");
        if (!ReferenceEquals(parameter, replacement) && _parameters.Contains(replacement))
            throw new ArgumentException($"{name}: the replacement {replacement.Describe()} is already optimized");
        IReadOnlyCollection<string> quantized;
        using (Autograd.NoGrad())
            quantized = MoveQuantizedState(parameter, replacement, transform);
        foreach (var key in _state.Keys.Where(k => ReferenceEquals(k.Item1, parameter) && !quantized.Contains(k.Item2)).ToList())
        {
            var state = _state[key];
            if (state.Shape != parameter.Shape)
                throw new InvalidOperationException($"{name}: the '{key.Item2}' state of {parameter.Describe()} ({state.Describe()}) is not one value per parameter value, and {name} does not move it ({nameof(MoveQuantizedState)})");
            var moved = Transformed(transform, StateValues(state), IsSecondMoment(key.Item2), replacement);
            using (Autograd.NoGrad())
            {
                if (ReferenceEquals(parameter, replacement))
                {
                    Fill(state, moved);
                    continue;
                }
                var dtype = state.DType;
                var born = RemoveState(parameter, key.Item2);
                Fill(AddState(replacement, key.Item2, replacement.Shape, dtype, born), moved);
            }
        }
        _parameters[at] = replacement;
    }

    /// <summary>Called by <see cref="ReplaceParameter(Tensor, Tensor, Func{double[], bool, double[]})"/> (checked
    /// arguments, no gradient recorded) before it maps the states of one value per parameter value: moves the states
    /// this optimizer keeps in a layout of their own (blockwise-quantized moments) from <paramref name="parameter"/>
    /// to <paramref name="replacement"/> (the same tensor for a remap), each as its values mapped by
    /// <paramref name="transform"/>, and returns the names of the replacement's states it wrote (which the base
    /// leaves alone). The parameter's states it consumed must be gone (<see cref="RemoveState"/>) unless
    /// rewritten in place. Default: no such states.</summary>
    protected virtual IReadOnlyCollection<string> MoveQuantizedState(Tensor parameter, Tensor replacement, Func<double[], bool, double[]> transform) => [];

    /// <summary><paramref name="transform"/>(<paramref name="values"/>, <paramref name="secondMoment"/>), checked
    /// to hold one value per value of <paramref name="replacement"/>.</summary>
    /// <exception cref="ArgumentException">It holds another number.</exception>
    protected double[] Transformed(Func<double[], bool, double[]> transform, double[] values, bool secondMoment, Tensor replacement)
    {
        ArgumentNullException.ThrowIfNull(transform);
        ArgumentNullException.ThrowIfNull(replacement);
        var moved = transform(values, secondMoment);
        if (moved.Length != replacement.Numel)
            throw new ArgumentException($"{GetType().Name}: the state transform gave {moved.Length} values for {replacement.Describe()}");
        return moved;
    }

    /// <summary>The values of a state tensor, row-major, in float64.</summary>
    protected static double[] StateValues(Tensor state)
    {
        ArgumentNullException.ThrowIfNull(state);
        using var old = state.To(DType.F64);
        return old.ToArray<double>();
    }

    /// <summary>Writes <paramref name="values"/> (row-major, as many as it holds) into <paramref name="state"/>,
    /// rounded to its dtype.</summary>
    protected static void Fill(Tensor state, double[] values)
    {
        ArgumentNullException.ThrowIfNull(state);
        using var host = Tensor.FromArray(values, state.Shape, state.Device);
        using var cast = host.To(state.DType);
        F.CopyInto(state, cast);
    }

    /// <summary>The state <paramref name="name"/> of <paramref name="p"/>, or null when it has none.</summary>
    protected Tensor? ExistingState(Tensor p, string name) => _state.GetValueOrDefault((p, name));

    /// <summary>Frees the state <paramref name="name"/> of <paramref name="p"/>; returns the step it was created in
    /// (what <see cref="AddState"/> carries over to the state that replaces it).</summary>
    /// <exception cref="KeyNotFoundException">There is no such state.</exception>
    protected long RemoveState(Tensor p, string name)
    {
        if (!_state.Remove((p, name), out var s))
            throw new KeyNotFoundException($"{GetType().Name}: {p.Describe()} has no '{name}' state");
        _createdAt.Remove((p, name), out var born);
        s.Dispose();
        return born;
    }

    /// <summary>A new zero state <paramref name="name"/> of <paramref name="p"/>, counted as created at step
    /// <paramref name="bornAt"/> (the state it takes over), so that it does not count as fresh in the next step.</summary>
    protected Tensor AddState(Tensor p, string name, Shape shape, DType dtype, long bornAt)
    {
        var s = State(p, name, shape, dtype, out _);
        _createdAt[(p, name)] = bornAt;
        return s;
    }

    /// <summary>True for a state that holds squares of gradients (Adam's second moment): it maps with squared
    /// coefficients so that it stays non-negative.</summary>
    protected virtual bool IsSecondMoment(string state) => false;

    /// <summary>Every state tensor by "param.name" key (for checkpoints and memory reports).</summary>
    public IReadOnlyDictionary<string, Tensor> StateDict()
        => _state.ToDictionary(kv => $"{kv.Key.Item1.Name ?? "param"}.{kv.Key.Item2}", kv => kv.Value);

    /// <summary>Optimizes <paramref name="replacement"/> in place of <paramref name="parameter"/> with no state yet
    /// (a checkpoint's loading replaced the parameter and loads its state next); the old state is freed.</summary>
    internal void Forget(Tensor parameter, Tensor replacement)
    {
        var at = _parameters.IndexOf(parameter);
        if (at < 0)
            throw new ArgumentException($"{GetType().Name}: {parameter.Describe()} is not one of its parameters");
        foreach (var key in _state.Keys.Where(k => ReferenceEquals(k.Item1, parameter)).ToList())
        {
            _state.Remove(key, out var s);
            _createdAt.Remove(key);
            s!.Dispose();
        }
        _parameters[at] = replacement;
    }

    /// <summary>Moves the optimizer's state (moments, momentum buffers, 8-bit codes and scales) to
    /// <paramref name="device"/> in place, after its parameters moved there with <see cref="Nn.Module.To"/>; all or
    /// nothing, as that move. State made later is made on its parameter's device.</summary>
    /// <exception cref="OutOfMemoryException">The device cannot hold the state; nothing moved.</exception>
    public Optimizer To(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        Tensor.MoveAll(_state.Values, device, $"{GetType().Name}.To({device})");
        return this;
    }

    /// <summary>The checkpoint tensors of the state: "optimizer/PARAMETER/STATE" (dense tensors any reader opens).</summary>
    internal IEnumerable<(string Name, Tensor Tensor)> NamedStates()
        => _state.Select(kv => ($"{StatePrefix}{kv.Key.Item1.Name ?? "param"}/{kv.Key.Item2}", kv.Value));

    /// <summary>The checkpoint metadata of the optimizer: its type, step count and learning rate.</summary>
    internal IEnumerable<KeyValuePair<string, string>> Metadata()
    {
        yield return new("optimizer.type", GetType().Name);
        yield return new("optimizer.step", StepCount.ToString(System.Globalization.CultureInfo.InvariantCulture));
        yield return new("optimizer.lr", Lr.ToString("R", System.Globalization.CultureInfo.InvariantCulture));
        yield return new("optimizer.states", _state.Count.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>Prefix of the optimizer's tensors in a checkpoint.</summary>
    internal const string StatePrefix = "optimizer/";

    /// <summary>Throws unless <see cref="LoadState"/> can load <paramref name="file"/>: the same optimizer type, a
    /// step count (≥ 0) and a rate (positive, finite), every stored state belonging to a parameter optimized here, a
    /// parameter with any state holding all of them, and as many states as the checkpoint says it saved (checkpoints
    /// written before that count was kept are not counted).</summary>
    /// <exception cref="ArgumentException">It cannot, naming what differs.</exception>
    internal void CheckState(IO.SafeTensorsFile file)
    {
        var name = GetType().Name;
        var invariant = System.Globalization.CultureInfo.InvariantCulture;
        if (file.Metadata.GetValueOrDefault("optimizer.type") != name)
            throw new ArgumentException($"the checkpoint's optimizer is '{file.Metadata.GetValueOrDefault("optimizer.type") ?? "(none)"}', not {name}");
        if (!long.TryParse(file.Metadata.GetValueOrDefault("optimizer.step"), System.Globalization.NumberStyles.None, invariant, out _))
            throw new ArgumentException($"the checkpoint's optimizer.step '{file.Metadata.GetValueOrDefault("optimizer.step") ?? "(none)"}' is not a step count (a whole number >= 0)");
        if (!double.TryParse(file.Metadata.GetValueOrDefault("optimizer.lr"), System.Globalization.NumberStyles.Float, invariant, out var lr) || !(lr > 0) || double.IsInfinity(lr))
            throw new ArgumentException($"the checkpoint's optimizer.lr '{file.Metadata.GetValueOrDefault("optimizer.lr") ?? "(none)"}' is not a learning rate (a positive finite number)");
        var byName = _parameters.ToDictionary(p => p.Name ?? "param", StringComparer.Ordinal);
        var held = new Dictionary<Tensor, (Shape Values, HashSet<string> States)>(ReferenceEqualityComparer.Instance);
        var states = file.Entries.Where(e => e.Name.StartsWith(StatePrefix, StringComparison.Ordinal)).ToList();
        foreach (var e in states)
        {
            var slash = e.Name.LastIndexOf('/');
            if (slash <= StatePrefix.Length || !byName.TryGetValue(e.Name[StatePrefix.Length..slash], out var p))
                throw new ArgumentException($"the checkpoint's optimizer state '{e.Name}' belongs to no parameter optimized here");
            // The layout follows the parameter as stored (a sparse layer's size may differ from the fresh model's).
            var values = p.Packing is not null ? p.GradShape : file.Contains(p.Name ?? "param") ? file.Entry(p.Name ?? "param").Shape : p.Shape;
            var state = e.Name[(slash + 1)..];
            if (StateLayout(values, state) is not { } layout || layout.Shape != e.Shape || layout.DType != e.DType)
                throw new ArgumentException($"the checkpoint's optimizer state '{e.Name}' ({e.DType.Name()} {e.Shape}) is not a {name} state of a parameter of shape {values}");
            if (!held.TryGetValue(p, out var h))
                held[p] = h = (values, new HashSet<string>(StringComparer.Ordinal));
            h.States.Add(state);
        }
        foreach (var (p, (values, present)) in held)
        {
            var missing = StateNames.Where(n => StateLayout(values, n) is not null && !present.Contains(n)).ToList();
            if (missing.Count > 0)
                throw new ArgumentException($"the checkpoint's optimizer state of '{p.Name ?? "param"}' lacks {string.Join(", ", missing.Select(m => $"'{m}'"))}: a {name} parameter of shape {values} keeps {string.Join(", ", StateNames.Where(n => StateLayout(values, n) is not null))}");
        }
        if (file.Metadata.TryGetValue("optimizer.states", out var counted)
            && (!int.TryParse(counted, System.Globalization.NumberStyles.None, invariant, out var count) || count != states.Count))
            throw new ArgumentException($"the checkpoint says it saved {counted} optimizer states but holds {states.Count}");
    }

    /// <summary>Every state name this optimizer may keep (which of them a parameter keeps: those
    /// <see cref="StateLayout"/> gives a layout).</summary>
    protected abstract IReadOnlyList<string> StateNames { get; }

    /// <summary>The shape and dtype of state <paramref name="state"/> for a parameter of <paramref name="values"/>
    /// values (F32 parameters), or null when this optimizer keeps no such state: how a checkpoint's state is checked.</summary>
    protected abstract (Shape Shape, DType DType)? StateLayout(Shape values, string state);

    /// <summary>Replaces the state with the one stored in <paramref name="file"/> (checked by
    /// <see cref="CheckState"/>), with the step count and the learning rate.</summary>
    internal void LoadState(IO.SafeTensorsFile file)
    {
        foreach (var s in _state.Values)
            s.Dispose();
        _state.Clear();
        _createdAt.Clear();
        var byName = _parameters.ToDictionary(p => p.Name ?? "param", StringComparer.Ordinal);
        foreach (var e in file.Entries.Where(e => e.Name.StartsWith(StatePrefix, StringComparison.Ordinal)))
        {
            var slash = e.Name.LastIndexOf('/');
            var p = byName[e.Name[StatePrefix.Length..slash]];
            var key = (p, e.Name[(slash + 1)..]);
            var t = file.ToTensor(e.Name, p.Device, MemoryCategory.OptimizerState);
            t.DetachFromScope();
            _state[key] = t;
            _createdAt[key] = -1;   // created in an earlier step
        }
        StepCount = long.Parse(file.Metadata["optimizer.step"], System.Globalization.CultureInfo.InvariantCulture);
        Lr = double.Parse(file.Metadata["optimizer.lr"], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Frees the optimizer state.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (var s in _state.Values)
            s.Dispose();
        _state.Clear();
        _createdAt.Clear();
        GC.SuppressFinalize(this);
    }
}
