using Frugal.Memory;

namespace Frugal.Optim;

/// <summary>Base of the optimizers: the parameters, a learning rate that schedules may change, and per-parameter
/// state tensors allocated lazily on the first step as OptimizerState memory owned by "param.state".</summary>
public abstract class Optimizer : IDisposable
{
    private readonly Dictionary<(Tensor, string), Tensor> _state = new();
    private bool _disposed;

    /// <summary>Optimizes <paramref name="parameters"/> with learning rate <paramref name="lr"/>.</summary>
    protected Optimizer(IEnumerable<Tensor> parameters, double lr)
    {
        Parameters = [.. parameters];
        if (Parameters.Count == 0)
            throw new ArgumentException($"{GetType().Name}: no parameters to optimize");
        if (Parameters.Distinct().Count() != Parameters.Count)
            throw new ArgumentException($"{GetType().Name}: a parameter is listed twice");
        foreach (var p in Parameters)
        {
            if (!p.DType.IsComputeType())
                throw new ArgumentException($"{GetType().Name}: parameter {p.Describe()} must be f32 or f64");
        }
        if (lr <= 0 || double.IsNaN(lr))
            throw new ArgumentOutOfRangeException(nameof(lr), $"{GetType().Name}: learning rate must be positive, got {lr}");
        Lr = lr;
        BaseLr = lr;
    }

    /// <summary>The optimized parameters.</summary>
    public IReadOnlyList<Tensor> Parameters { get; }

    /// <summary>Current learning rate.</summary>
    public double Lr { get; set; }

    /// <summary>Learning rate given at construction (schedules scale it).</summary>
    public double BaseLr { get; }

    /// <summary>Steps taken.</summary>
    public long StepCount { get; private set; }

    /// <summary>Applies one update to every parameter that has a gradient.</summary>
    public void Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        StepCount++;
        using var noGrad = Autograd.Autograd.NoGrad();
        foreach (var p in Parameters)
        {
            if (p.Grad is not { } g)
                continue;
            if (g.Shape != p.Shape || g.DType != p.DType || !g.IsContiguous || !p.IsContiguous)
                throw new InvalidOperationException($"{GetType().Name}: gradient {g.Describe()} does not match parameter {p.Describe()} (both must be contiguous and alike)");
            Update(p, g);
        }
    }

    /// <summary>Updates one parameter in place from its gradient.</summary>
    protected abstract void Update(Tensor parameter, Tensor grad);

    /// <summary>Drops every parameter's gradient (frees gradient memory).</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters)
            p.Grad = null;
    }

    /// <summary>The state tensor <paramref name="name"/> of <paramref name="p"/>, created as zeros on first use.</summary>
    protected Tensor State(Tensor p, string name, out bool created)
    {
        created = false;
        if (_state.TryGetValue((p, name), out var s))
            return s;
        s = Tensor.Zeros(p.Shape, p.DType, p.Device, MemoryCategory.OptimizerState, $"{p.Name ?? "param"}.{name}");
        s.DetachFromScope();
        _state[(p, name)] = s;
        created = true;
        return s;
    }

    /// <summary>Rearranges the state of a parameter whose entries were moved (a sparse pattern update): entry k of
    /// every state tensor becomes old entry <paramref name="source"/>[k], or zero where that is -1 (a new entry
    /// starts with zeroed state, as regrown weights do in SET and RigL).</summary>
    /// <exception cref="ArgumentException">The parameter is not optimized here, or the map's length or an index is wrong.</exception>
    public void RemapState(Tensor parameter, ReadOnlySpan<int> source)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        if (!Parameters.Contains(parameter))
            throw new ArgumentException($"{GetType().Name}.RemapState: {parameter.Describe()} is not one of its parameters");
        if (source.Length != parameter.Numel)
            throw new ArgumentException($"{GetType().Name}.RemapState: {source.Length} map entries for {parameter.Describe()} ({parameter.Numel} elements)");
        foreach (var k in source)
        {
            if (k < -1 || k >= parameter.Numel)
                throw new ArgumentException($"{GetType().Name}.RemapState: source index {k} is outside [-1, {parameter.Numel})");
        }
        var map = source.ToArray();
        foreach (var state in _state.Where(kv => ReferenceEquals(kv.Key.Item1, parameter)).Select(kv => kv.Value))
        {
            var old = state.To(DType.F64);
            try
            {
                var values = old.ToArray<double>();
                var moved = map.Select(k => k < 0 ? 0.0 : values[k]).ToArray();
                using var host = Tensor.FromArray(moved, state.Shape, state.Device);
                using var cast = host.To(state.DType);
                using (Autograd.Autograd.NoGrad())
                    F.CopyInto(state, cast);
            }
            finally
            {
                old.Dispose();
            }
        }
    }

    /// <summary>Every state tensor by "param.name" key (for checkpoints and memory reports).</summary>
    public IReadOnlyDictionary<string, Tensor> StateDict()
        => _state.ToDictionary(kv => $"{kv.Key.Item1.Name ?? "param"}.{kv.Key.Item2}", kv => kv.Value);

    /// <summary>Frees the optimizer state.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (var s in _state.Values)
            s.Dispose();
        _state.Clear();
        GC.SuppressFinalize(this);
    }
}
