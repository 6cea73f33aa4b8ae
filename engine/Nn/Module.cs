using Frugal.Formats;
using Frugal.Memory;

namespace Frugal.Nn;

/// <summary>A layer or model (PyTorch's nn.Module): named parameters and child modules with dotted paths,
/// train/eval mode, and a state dict. <see cref="Forward"/> runs <see cref="OnForward"/> with the module's path
/// as the owner of the memory it allocates, so the allocator and the profiler can attribute it.</summary>
public abstract class Module : IDisposable
{
    private readonly List<(string Name, Tensor Value)> _parameters = [];
    private readonly List<(string Name, Module Value)> _children = [];
    private readonly List<(string Name, Tensor Value)> _buffers = [];
    private readonly List<(string Name, Weight Value, int At)> _weights = [];
    private bool _disposed;

    /// <summary>Dotted path from the root model ("" for the root, "0.weight" style names below it).</summary>
    public string Path { get; private set; } = "";

    /// <summary>True in training mode (dropout active), false after <see cref="Eval"/>.</summary>
    public bool Training { get; private set; } = true;

    /// <summary>Applies the module to <paramref name="x"/>.</summary>
    public Tensor Forward(Tensor x)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using (MemoryContext.Owned(Path.Length == 0 ? GetType().Name : Path))
            return OnForward(x);
    }

    /// <summary>The computation of the module.</summary>
    protected abstract Tensor OnForward(Tensor x);

    /// <summary>Registers a trained tensor: it becomes Parameter memory owned by this module, requires grad, and
    /// leaves any tensor scope (the module owns it until disposed).</summary>
    protected Tensor RegisterParameter(string name, Tensor value)
    {
        value.DetachFromScope();
        value.Buffer.Recategorize(MemoryCategory.Parameter, Join(Path, name));
        value.RequiresGrad = true;
        value.Name = Join(Path, name);
        _parameters.Add((name, value));
        return value;
    }

    /// <summary>Creates a trained tensor with <paramref name="create"/> directly as Parameter memory (no transient in
    /// another category) and registers it as <see cref="RegisterParameter(string, Tensor)"/> does.</summary>
    protected Tensor RegisterParameter(string name, Func<Tensor> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        using (MemoryContext.Use(MemoryCategory.Parameter, Join(Path, name)))
            return RegisterParameter(name, create());
    }

    /// <summary>Registers a tensor the module owns but does not train (a sparse pattern's indices, FormatMeta):
    /// created with <paramref name="create"/> under <paramref name="category"/>, disposed with the module.</summary>
    protected Tensor RegisterBuffer(string name, MemoryCategory category, Func<Tensor> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        Tensor value;
        using (MemoryContext.Use(category, Join(Path, name)))
            value = create();
        value.DetachFromScope();
        value.Name = Join(Path, name);
        _buffers.Add((name, value));
        return value;
    }

    /// <summary>Registers the layer's weight in its format under <paramref name="name"/>: its trained parts become
    /// parameters named after it ("weight", "weight_u" ...) in the order registered, its other parts buffers, and the
    /// module disposes it.</summary>
    protected T RegisterWeight<T>(string name, T weight) where T : Weight
    {
        ArgumentNullException.ThrowIfNull(weight);
        _weights.Add((name, weight, _parameters.Count));
        weight.Rename(Join(Path, name));
        return weight;
    }

    /// <summary>Registers a child module under <paramref name="name"/>.</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        _children.Add((name, module));
        module.SetPath(Join(Path, name));
        return module;
    }

    private static string Join(string path, string name) => path.Length == 0 ? name : path + "." + name;

    private void SetPath(string path)
    {
        Path = path;
        foreach (var (name, p) in _parameters)
        {
            p.Name = Join(path, name);
            p.Buffer.Recategorize(MemoryCategory.Parameter, p.Name);
        }
        foreach (var (name, b) in _buffers)
        {
            b.Name = Join(path, name);
            b.Buffer.Recategorize(b.Buffer.Category, b.Name);
        }
        foreach (var (name, w, _) in _weights)
            w.Rename(Join(path, name));
        foreach (var (name, c) in _children)
            c.SetPath(Join(path, name));
    }

    /// <summary>Child modules in registration order.</summary>
    public IEnumerable<Module> Children() => _children.Select(c => c.Value);

    /// <summary>The format of the weights this module itself holds ("dense", "csr", "bsr16", "lowrank"), or null when
    /// it holds none.</summary>
    public virtual string? WeightFormatName => _weights.Count > 0 ? _weights[0].Value.FormatName : _parameters.Count > 0 ? "dense" : null;

    /// <summary>Every weight of this module and the modules below it with the module that holds it, each once
    /// (a shared module's weights under their first place).</summary>
    public IEnumerable<(Module Module, Weight Weight)> Weights()
        => Modules().SelectMany(m => m._weights.Select(w => (m, w.Value)));

    /// <summary>Module path → weight format of every module that holds weights (the profiler's per-format key).</summary>
    public IReadOnlyDictionary<string, string> FormatsByPath()
        => Modules().Where(m => m.WeightFormatName is not null).ToDictionary(m => m.Path, m => m.WeightFormatName!);

    /// <summary>This module and every module below it, depth first, each once.</summary>
    public IEnumerable<Module> Modules()
    {
        var seen = new HashSet<Module>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Module>([this]);
        while (stack.Count > 0)
        {
            var m = stack.Pop();
            if (!seen.Add(m))
                continue;
            yield return m;
            foreach (var c in m._children.Select(c => c.Value).Reverse())
                stack.Push(c);
        }
    }

    /// <summary>Every parameter with its dotted name, depth first in registration order; a parameter reached twice
    /// (a module registered in two places) is listed once, under its first name.</summary>
    public IEnumerable<(string Name, Tensor Parameter)> NamedParameters()
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        return AllNamedParameters().Where(p => seen.Add(p.Parameter));
    }

    /// <summary>This module's own parameters in registration order, a weight's trained parts in its place.</summary>
    private IEnumerable<(string Name, Tensor Parameter)> OwnParameters()
    {
        for (var i = 0; i <= _parameters.Count; i++)
        {
            foreach (var (_, w, _) in _weights.Where(w => w.At == i))
            {
                foreach (var p in w.Parts.Where(p => p.Trained))
                    yield return (p.Tensor.Name!, p.Tensor);
            }
            if (i < _parameters.Count)
                yield return (Join(Path, _parameters[i].Name), _parameters[i].Value);
        }
    }

    private IEnumerable<(string Name, Tensor Parameter)> AllNamedParameters()
    {
        foreach (var (name, p) in OwnParameters())
            yield return (name, p);
        foreach (var (_, c) in _children)
        {
            foreach (var np in c.AllNamedParameters())
                yield return np;
        }
    }

    /// <summary>Every parameter.</summary>
    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(p => p.Parameter);

    /// <summary>Number of trained values.</summary>
    public long ParameterCount() => Parameters().Sum(p => p.GradShape.Numel);

    /// <summary>Number of values the model represents: each weight counted at its dense shape (a 10%-dense CSR
    /// weight as all of its rows × columns, low-rank factors as their product), every other parameter as itself; a
    /// shared weight once.</summary>
    public long LogicalParameterCount()
    {
        var weights = Weights().Select(w => w.Weight).Distinct().ToList();
        var inWeights = new HashSet<Tensor>(weights.SelectMany(w => w.Parameters), ReferenceEqualityComparer.Instance);
        return weights.Sum(w => w.Shape.Numel) + Parameters().Where(p => !inWeights.Contains(p)).Sum(p => p.GradShape.Numel);
    }

    /// <summary>Sets training mode on this module and its children.</summary>
    public Module Train(bool on = true)
    {
        Training = on;
        foreach (var c in Children())
            c.Train(on);
        return this;
    }

    /// <summary>Sets evaluation mode (dropout off).</summary>
    public Module Eval() => Train(false);

    /// <summary>Moves every parameter (with its gradient) and buffer of this module and the modules below it to
    /// <paramref name="device"/> in place, as PyTorch's <c>module.to(device)</c>: the tensor objects stay (a layer's
    /// <c>Bias</c>, a weight's parts), their storage moves, and an optimizer made over them steps on the new device
    /// once its own state is moved too (<see cref="Optim.Optimizer.To"/>). All or nothing: when the device cannot
    /// hold everything, nothing has moved.</summary>
    /// <exception cref="OutOfMemoryException">The device cannot hold the module; it is where it was.</exception>
    public Module To(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Tensor.MoveAll(NamedTensors().Select(t => t.Tensor), device, $"{GetType().Name}.To({device})");
        return this;
    }

    /// <summary>Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)): gradient memory is freed.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters())
            p.Grad = null;
    }

    /// <summary>Every parameter and buffer by dotted name (the tensors themselves, not copies), as
    /// <see cref="NamedTensors"/>: a sparse layer's pattern and a quantized layer's scales are part of it.</summary>
    public IReadOnlyDictionary<string, Tensor> StateDict() => NamedTensors().ToDictionary(t => t.Name, t => t.Tensor);

    /// <summary>What the weights hold that is not a tensor, by key (PyTorch's <c>get_extra_state</c>): a
    /// master-free weight's rounding stream as "seed,draws" under "WEIGHT.rounding_stream". Checkpoints store it as
    /// metadata; <see cref="LoadStateDict"/> takes it so that a copy continues the same stream.</summary>
    public IReadOnlyDictionary<string, string> ExtraState() => Modules().SelectMany(m => m.OwnMetadata()).ToDictionary(StringComparer.Ordinal);

    /// <summary>Loads <paramref name="state"/> (a <see cref="StateDict"/>, of this model or a copy of it) as a
    /// checkpoint would be loaded: the same names, each tensor checked by its format before anything is written (a
    /// sparse layer's pattern may hold another number of stored values, a low-rank layer another rank); a parameter
    /// that a format replaces in doing so is handed over to <paramref name="optimizer"/> with fresh state.
    /// <paramref name="extraState"/> (an <see cref="ExtraState"/>, with the same keys as this model's) is loaded
    /// too: given, the copy's master-free weights continue the source's rounding streams, so both train on
    /// identically; left out, this model keeps its own.</summary>
    /// <exception cref="ArgumentException">A name or extra-state key is missing or unexpected; nothing was changed.</exception>
    /// <exception cref="ShapeMismatchException">A tensor or extra-state value does not fit, naming it; nothing was changed.</exception>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, Optim.Optimizer? optimizer = null, IReadOnlyDictionary<string, string>? extraState = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        CheckNames("", NamedTensors().Select(t => t.Name), state.Keys);
        var own = ExtraState();
        if (extraState is not null)
            CheckNames("extra state: ", own.Keys, extraState.Keys);
        using var file = IO.SafeTensors.InMemory("LoadStateDict", [.. state.Select(kv => (kv.Key, kv.Value))], extraState ?? own);
        try
        {
            foreach (var m in Modules())
                m.CheckOwn(file);
        }
        catch (Exception e) when (e is ArgumentException or IO.SafeTensorsException)
        {
            throw new ShapeMismatchException($"LoadStateDict: {e.Message}");
        }
        foreach (var m in Modules())
            m.LoadOwn(file, optimizer);
    }

    private static void CheckNames(string what, IEnumerable<string> mine, IEnumerable<string> given)
    {
        var missing = mine.Except(given).ToList();
        var extra = given.Except(mine).ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new ArgumentException($"LoadStateDict: {what}missing [{string.Join(", ", missing)}], unexpected [{string.Join(", ", extra)}]");
    }

    /// <summary>Every parameter and buffer (a sparse pattern's indices, a quantized weight's scales) with its dotted
    /// name, parameters first, each tensor once: what a checkpoint stores.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedTensors()
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (name, p) in NamedParameters())
        {
            seen.Add(p);
            yield return (name, p);
        }
        foreach (var m in Modules())
        {
            foreach (var b in m._buffers.Select(b => b.Value).Concat(m._weights.SelectMany(w => w.Value.Parts.Where(p => !p.Trained).Select(p => p.Tensor))))
            {
                if (seen.Add(b))
                    yield return (b.Name!, b);
            }
        }
    }

    /// <summary>Checkpoint metadata of the weights this module itself holds, by key (e.g. a master-free weight's
    /// rounding stream); keys start with the tensor names they describe.</summary>
    protected internal virtual IEnumerable<KeyValuePair<string, string>> OwnMetadata() => _weights.SelectMany(w => w.Value.Metadata());

    /// <summary>Throws unless <see cref="LoadOwn"/> can load this module's own tensors from <paramref name="file"/>
    /// (by full dotted name). The default wants every tensor with its shape and dtype; formats whose sizes may change
    /// in training (a sparse pattern, a rank) accept others that they validate.</summary>
    /// <exception cref="ArgumentException">A tensor is missing or does not fit, naming it.</exception>
    protected internal virtual void CheckOwn(IO.SafeTensorsFile file)
    {
        foreach (var (_, t) in _parameters.Concat(_buffers))
            Weight.CheckStored(file, t, t.Shape);
        foreach (var (_, w, _) in _weights)
            w.Check(file);
    }

    /// <summary>Loads this module's own tensors (checked by <see cref="CheckOwn"/>); a format that replaces a
    /// parameter tells <paramref name="optimizer"/>, whose state is loaded afterwards.</summary>
    protected internal virtual void LoadOwn(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        foreach (var (_, t) in _parameters.Concat(_buffers))
            Weight.LoadStored(file, t);
        foreach (var (_, w, _) in _weights)
            w.Load(file, optimizer);
    }

    /// <summary>Disposes the parameters (and their gradients) of this module and its children.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (var (_, p) in _parameters)
            p.Dispose();
        foreach (var (_, b) in _buffers)
            b.Dispose();
        foreach (var (_, w, _) in _weights)
            w.Dispose();
        foreach (var (_, c) in _children)
            c.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <inheritdoc/>
    public override string ToString() => GetType().Name;
}
