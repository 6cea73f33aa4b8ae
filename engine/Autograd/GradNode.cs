namespace Frugal;

/// <summary>One recorded op: edges to its inputs (an upstream node and which of its outputs, or a leaf to accumulate
/// into), the tensors it saved for backward (aliases that keep their buffers alive, Activation memory), and its
/// backward function. Nodes are reference counted by the tensors and nodes that point at them, so a graph that is
/// never back-propagated is freed when its last output is disposed.</summary>
internal sealed class GradNode
{
    private readonly List<Tensor> _saved = [];
    private int _refs = 1;

    /// <summary>A node of an op with <paramref name="outputs"/> outputs (one for all but custom ops).</summary>
    internal GradNode(string op, Tensor[] inputs, int outputs = 1)
    {
        Op = op;
        OutputCount = outputs;
        Inputs = new GradNode?[inputs.Length];
        InputSlots = new int[inputs.Length];
        Leaves = new Tensor?[inputs.Length];
        for (var i = 0; i < inputs.Length; i++)
        {
            var x = inputs[i];
            if (!x.RequiresGrad)
                continue;
            if (x.GradFn is { } n)
            {
                n.Retain();
                Inputs[i] = n;
                InputSlots[i] = x.GradSlot;
            }
            else
            {
                Leaves[i] = x;
            }
        }
    }

    /// <summary>Name of the op, for messages and memory owners.</summary>
    public string Op { get; }

    /// <summary>Upstream node per input (null when the input is a leaf or needs no gradient).</summary>
    public GradNode?[] Inputs { get; }

    /// <summary>Which output of <see cref="Inputs"/>[i] input i is.</summary>
    public int[] InputSlots { get; }

    /// <summary>Leaf tensor per input that accumulates a gradient.</summary>
    public Tensor?[] Leaves { get; }

    /// <summary>Number of outputs; a node with more than one runs <see cref="BackwardOutputs"/>.</summary>
    public int OutputCount { get; }

    /// <summary>Computes input gradients from the output gradient; entries for inputs that need none may be null.
    /// Returned tensors are owned by the engine (each must be a distinct tensor).</summary>
    public Func<Tensor, Tensor?[]> Backward { get; set; } = _ => throw new InvalidOperationException("node has no backward");

    /// <summary>A node with several outputs: <see cref="Backward"/> from the gradient of each output (null where an
    /// output received none).</summary>
    public Func<Tensor?[], Tensor?[]> BackwardOutputs { get; set; } = _ => throw new InvalidOperationException("node has no backward");

    /// <summary>True once its saved tensors were freed by a backward pass.</summary>
    public bool Consumed { get; private set; }

    /// <summary>Whether input <paramref name="i"/> wants a gradient.</summary>
    public bool NeedsGrad(int i) => Inputs[i] is not null || Leaves[i] is not null;

    /// <summary>Saves a tensor for backward: returns an alias sharing its buffer, freed after backward.</summary>
    public Tensor Save(Tensor t)
    {
        var a = t.Alias().DetachFromScope();
        _saved.Add(a);
        return a;
    }

    internal void Retain() => _refs++;

    /// <summary>Drops one holder; the last frees the saved tensors and releases upstream nodes.</summary>
    internal void Release()
    {
        if (--_refs > 0)
            return;
        FreeSaved();
        for (var i = 0; i < Inputs.Length; i++)
        {
            Inputs[i]?.Release();
            Inputs[i] = null;
        }
    }

    /// <summary>Frees the saved tensors (after this node's backward ran).</summary>
    internal void FreeSaved()
    {
        foreach (var t in _saved)
            t.Dispose();
        _saved.Clear();
        Consumed = true;
    }
}
