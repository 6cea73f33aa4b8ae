using Frugal.Memory;

namespace Frugal;

/// <summary>Define-by-run reverse-mode differentiation. Ops record a <see cref="GradNode"/> when autograd is
/// enabled and an input requires a gradient; <see cref="Tensor.Backward()"/> runs the nodes in reverse topological
/// order, accumulates into leaves, and frees each node's saved tensors as soon as its backward has run.
/// Backward ops are not themselves recorded (no higher-order gradients).</summary>
public static class Autograd
{
    [ThreadStatic] private static int t_noGradDepth;

    /// <summary>True when ops on this thread record for autograd.</summary>
    public static bool IsEnabled => t_noGradDepth == 0;

    /// <summary>Disables recording on this thread until the returned scope is disposed (inference, optimizer steps).</summary>
    public static NoGradScope NoGrad()
    {
        t_noGradDepth++;
        return new NoGradScope(false);
    }

    /// <summary>Enables recording on this thread until disposed, even inside <see cref="NoGrad"/> (checkpoint recompute).</summary>
    internal static NoGradScope EnableGrad()
    {
        var saved = t_noGradDepth;
        t_noGradDepth = 0;
        return new NoGradScope(true, saved);
    }

    /// <summary>Restores the previous recording state.</summary>
    public readonly struct NoGradScope : IDisposable
    {
        private readonly bool _restore;
        private readonly int _depth;

        internal NoGradScope(bool restore, int depth = 0)
        {
            _restore = restore;
            _depth = depth;
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            if (_restore)
                t_noGradDepth = _depth;
            else
                t_noGradDepth--;
        }
    }

    /// <summary>True when an op over <paramref name="inputs"/> must be recorded.</summary>
    internal static bool ShouldRecord(params ReadOnlySpan<Tensor> inputs)
    {
        if (!IsEnabled)
            return false;
        foreach (var t in inputs)
        {
            if (t.RequiresGrad)
                return true;
        }
        return false;
    }

    /// <summary>Attaches a new node for <paramref name="op"/> to <paramref name="output"/> when recording is needed;
    /// returns the node (to save tensors and set the backward) or null.</summary>
    internal static GradNode? Record(Tensor output, string op, params Tensor[] inputs)
    {
        if (!ShouldRecord(inputs))
            return null;
        return Attach(output, new GradNode(op, inputs));
    }

    /// <summary>For an op with several outputs: attaches one new node to each non-null entry of
    /// <paramref name="outputs"/> (the differentiable ones, at their output index) when recording is needed and
    /// there is one; returns the node or null.</summary>
    internal static GradNode? Record(Tensor?[] outputs, string op, params Tensor[] inputs)
    {
        if (!ShouldRecord(inputs) || outputs.All(y => y is null))
            return null;
        var node = new GradNode(op, inputs, outputs.Length);
        var holders = 0;
        for (var k = 0; k < outputs.Length; k++)
        {
            if (outputs[k] is not { } y)
                continue;
            if (holders++ > 0)
                node.Retain();   // each output holds the node, as the first does from its creation
            Attach(y, node, k);
        }
        return node;
    }

    internal static GradNode Attach(Tensor output, GradNode node, int slot = 0)
    {
        output.GradFn = node;
        output.GradSlot = slot;
        output.RequiresGrad = true;
        return node;
    }

    [ThreadStatic] private static IGradientHook? t_hook;
    [ThreadStatic] private static int t_depth;

    /// <summary>Sets the hook told when a backward starts and when a leaf's gradient is complete, until disposed.</summary>
    internal static HookScope Hook(IGradientHook hook)
    {
        var previous = t_hook;
        t_hook = hook;
        return new HookScope(previous);
    }

    /// <summary>Restores the previous hook.</summary>
    internal readonly struct HookScope(IGradientHook? previous) : IDisposable
    {
        public void Dispose() => t_hook = previous;
    }

    /// <summary>Back-propagates <paramref name="grad"/> (owned by the engine from here on) from <paramref name="root"/>.</summary>
    internal static void Run(Tensor root, Tensor grad)
    {
        if (t_depth == 0 && t_hook is { } hook)
        {
            try
            {
                hook.BackwardStarting();
            }
            catch
            {
                grad.Dispose();   // refused before anything was computed: nothing is left behind
                throw;
            }
        }
        t_depth++;
        try
        {
            RunGraph(root, grad);
        }
        finally
        {
            t_depth--;
        }
    }

    private static void RunGraph(Tensor root, Tensor grad)
    {
        var start = root.GradFn;
        if (start is null)
        {
            AccumulateLeaf(root, grad);
            t_hook?.GradientReady(root);
            return;
        }
        // Count consumers of each node within the graph reachable from the root; refuse before any gradient is
        // computed when part of that graph was already back-propagated (its saved tensors are gone).
        var pending = new Dictionary<GradNode, int> { [start] = 0 };
        // How many gradients each leaf receives in this graph: when the last arrives, its gradient is complete.
        var leafUses = new Dictionary<Tensor, int>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<GradNode>();
        stack.Push(start);
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            if (n.Consumed)
            {
                grad.Dispose();
                throw new InvalidOperationException(
                    $"Backward: the graph of {root.Describe()} reaches '{n.Op}', which was already back-propagated and its saved tensors freed");
            }
            for (var i = 0; i < n.Leaves.Length; i++)
            {
                if (n.Leaves[i] is { RequiresGrad: true } leaf)
                    leafUses[leaf] = leafUses.GetValueOrDefault(leaf) + 1;
            }
            foreach (var up in n.Inputs)
            {
                if (up is null)
                    continue;
                if (pending.TryGetValue(up, out var c))
                {
                    pending[up] = c + 1;
                }
                else
                {
                    pending[up] = 1;
                    stack.Push(up);
                }
            }
        }

        // The gradient of each (node, output) reached so far.
        var grads = new Dictionary<(GradNode, int), Tensor> { [(start, root.GradSlot)] = grad };
        var ready = new Stack<GradNode>();
        ready.Push(start);
        using var noGrad = NoGrad();
        while (ready.Count > 0)
        {
            var node = ready.Pop();
            var g = new Tensor?[node.OutputCount];
            for (var k = 0; k < g.Length; k++)
                g[k] = grads.Remove((node, k), out var gk) ? gk : null;
            Tensor?[] inputGrads;
            using (MemoryContext.Use(MemoryCategory.Gradient, node.Op))
            {
                try
                {
                    inputGrads = g.Length == 1 ? node.Backward(g[0]!) : node.BackwardOutputs(g);
                }
                finally
                {
                    foreach (var gk in g)
                        gk?.Dispose();
                    node.FreeSaved();
                }
            }
            for (var i = 0; i < node.Inputs.Length; i++)
            {
                var gi = i < inputGrads.Length ? inputGrads[i] : null;
                if (gi is null)
                    continue;
                gi.DetachFromScope();
                if (node.Leaves[i] is { } leaf)
                {
                    AccumulateLeaf(leaf, gi);
                    if (leafUses.TryGetValue(leaf, out var left) && (leafUses[leaf] = left - 1) == 0)
                        t_hook?.GradientReady(leaf);
                }
                else if (node.Inputs[i] is { } up)
                {
                    var edge = (up, node.InputSlots[i]);
                    if (grads.TryGetValue(edge, out var existing))
                    {
                        using (MemoryContext.Use(MemoryCategory.Gradient, up.Op))
                            grads[edge] = F.Add(existing, gi).DetachFromScope();
                        existing.Dispose();
                        gi.Dispose();
                    }
                    else
                    {
                        grads[edge] = gi;
                    }
                    if (--pending[up] == 0)
                        ready.Push(up);
                }
                else
                {
                    gi.Dispose();
                }
            }
        }
        foreach (var left in grads.Values)
            left.Dispose();
    }

    /// <summary>leaf.Grad += g, in the leaf's own buffer of category Gradient; takes ownership of g.</summary>
    private static void AccumulateLeaf(Tensor leaf, Tensor g)
    {
        if (g.Shape != leaf.GradShape)
            throw new ShapeMismatchException($"Backward: gradient {g.Shape} does not match leaf {leaf.Describe()}{(leaf.Packing is { } p ? $" (packed {p.LogicalShape})" : "")}");
        var owner = leaf.Name ?? "leaf";
        if (leaf.Grad is { } existing)
        {
            using (MemoryContext.Use(MemoryCategory.Gradient, owner))
                F.AddInPlace(existing, g);
            g.Dispose();
            return;
        }
        var buffer = g.Buffer;
        if (buffer.RefCount == 1 && g.Offset == 0 && g.IsContiguous && buffer.Bytes == g.Numel * g.DType.SizeOf())
        {
            buffer.Recategorize(MemoryCategory.Gradient, owner);
            leaf.Grad = g;
            return;
        }
        var copy = Tensor.Empty(g.Shape, g.DType, g.Device, MemoryCategory.Gradient, owner);
        g.Backend.Copy(g.View, copy.View);
        g.Dispose();
        leaf.Grad = copy;
    }
}

/// <summary>Told by backward when it starts (the outermost run only) and when a leaf's gradient is complete (every
/// use of the leaf in the graph has delivered its part): the optimizer's update in backward.</summary>
internal interface IGradientHook
{
    void BackwardStarting();

    void GradientReady(Tensor leaf);
}
