using Frugal.Memory;

namespace Frugal;

/// <summary>Gradient checkpointing: runs a function without recording its inner graph, saving only its inputs;
/// backward recomputes it (with the same random draws) and back-propagates through the recomputed graph.
/// Activation memory of the segment is traded for a second forward pass.</summary>
public static class Checkpoint
{
    /// <summary>Runs <paramref name="fn"/> on <paramref name="inputs"/> as one checkpointed segment. Parameters the
    /// function uses receive their gradients during the recomputation.</summary>
    public static Tensor Run(Func<Tensor[], Tensor> fn, params Tensor[] inputs)
    {
        ArgumentNullException.ThrowIfNull(fn);
        if (!Autograd.IsEnabled)
            return fn(inputs);
        var rng = Rng.State;
        Tensor output;
        using (Autograd.NoGrad())
            output = fn(inputs);
        var node = Autograd.Attach(output, new GradNode("Checkpoint", inputs));
        var saved = inputs.Select(node.Save).ToArray();
        node.Backward = g =>
        {
            var leaves = saved.Select((s, i) =>
            {
                var leaf = s.Alias().DetachFromScope();
                leaf.RequiresGrad = inputs[i].RequiresGrad;
                return leaf;
            }).ToArray();
            try
            {
                var outer = Rng.State;
                Tensor recomputed;
                using (Autograd.EnableGrad())
                using (MemoryContext.Use(MemoryCategory.Activation, "checkpoint"))
                {
                    Rng.State = rng;
                    try
                    {
                        recomputed = fn(leaves);
                    }
                    finally
                    {
                        Rng.State = outer;
                    }
                }
                using (recomputed)
                {
                    if (recomputed.RequiresGrad)
                        Autograd.Run(recomputed, g.Alias().DetachFromScope());
                }
                return [.. leaves.Select(l => l.TakeGrad())];
            }
            finally
            {
                foreach (var l in leaves)
                    l.Dispose();
            }
        };
        return output;
    }
}
