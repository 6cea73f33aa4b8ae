using Frugal.Formats;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Training.Sparsity;

/// <summary>
/// Dynamic sparse training over a model's <see cref="SparseLinear"/> layers: every <c>updateEvery</c> steps until
/// <c>endStep</c>, each layer drops the fraction of its stored weights with the smallest magnitudes and regrows as
/// many at empty positions chosen by the method, so its density stays constant. The drop fraction decays with a
/// cosine from <c>dropFraction</c> to 0 at <c>endStep</c> (as in RigL). Regrown weights and their optimizer state
/// start at zero; surviving weights keep their values and state. Call <see cref="Step"/> after each optimizer step
/// and ZeroGrad.
/// </summary>
public abstract class DynamicSparsity
{
    private readonly Optimizer _optimizer;

    /// <summary>The method on every sparse layer of <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">The model has no sparse layer, or the schedule is invalid.</exception>
    protected DynamicSparsity(Module model, Optimizer optimizer, int updateEvery, double dropFraction, long endStep)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        var name = GetType().Name;
        Layers = [.. Descendants(model).OfType<SparseLinear>()];
        if (Layers.Count == 0)
            throw new ArgumentException($"{name}: {model.GetType().Name} has no sparse layer to update (give its Linear layers a csr format)");
        if (updateEvery <= 0 || endStep <= 0 || !(dropFraction > 0 && dropFraction < 1))
            throw new ArgumentException($"{name}: need updateEvery > 0, endStep > 0 and dropFraction in (0, 1), got {updateEvery}, {endStep}, {dropFraction}");
        (_optimizer, UpdateEvery, DropFraction, EndStep) = (optimizer, updateEvery, dropFraction, endStep);
    }

    /// <summary>The sparse layers updated.</summary>
    protected IReadOnlyList<SparseLinear> Layers { get; }

    /// <summary>Steps between pattern updates.</summary>
    public int UpdateEvery { get; }

    /// <summary>Initial drop fraction.</summary>
    public double DropFraction { get; }

    /// <summary>Step after which the pattern is frozen.</summary>
    public long EndStep { get; }

    /// <summary>Steps counted so far.</summary>
    public long StepCount { get; private set; }

    /// <summary>Pattern updates made so far.</summary>
    public int Updates { get; private set; }

    /// <summary>The cosine-decayed drop fraction at <paramref name="step"/>.</summary>
    public double DropFractionAt(long step) => step >= EndStep ? 0 : DropFraction / 2 * (1 + Math.Cos(Math.PI * step / EndStep));

    /// <summary>True when step <paramref name="step"/> (1-based) updates the patterns.</summary>
    public bool IsUpdateStep(long step) => step % UpdateEvery == 0 && step < EndStep;

    /// <summary>How many weights a layer drops (and regrows) at drop fraction <paramref name="fraction"/>.</summary>
    protected static int DropCount(SparseLinear layer, double fraction) => (int)Math.Round(fraction * layer.Pattern.Nnz);

    /// <summary>Counts one training step; updates the patterns on update steps and prepares the next one.
    /// Returns true when it updated.</summary>
    public bool Step()
    {
        var step = ++StepCount;
        var updated = false;
        if (IsUpdateStep(step))
        {
            var fraction = DropFractionAt(step);
            foreach (var layer in Layers)
                Update(layer, DropCount(layer, fraction));
            Updates++;
            updated = true;
        }
        if (IsUpdateStep(step + 1))
            BeforeUpdateStep(DropFractionAt(step + 1));
        return updated;
    }

    /// <summary>Called before the step that will update (RigL arms its gradient request here).</summary>
    protected virtual void BeforeUpdateStep(double fraction)
    {
    }

    /// <summary>The flat positions (row · cols + col) where <paramref name="count"/> weights regrow, none of them in
    /// <paramref name="occupied"/> (the surviving entries).</summary>
    protected abstract IReadOnlyCollection<long> Regrow(SparseLinear layer, int count, HashSet<long> occupied);

    private void Update(SparseLinear layer, int drop)
    {
        var pattern = layer.Pattern;
        var nnz = pattern.Nnz;
        if (drop == 0)
            return;
        var values = layer.Values.ToArray<float>();
        var flat = new long[nnz];
        for (var r = 0; r < pattern.Rows; r++)
        {
            for (var k = pattern.RowPtr[r]; k < pattern.RowPtr[r + 1]; k++)
                flat[k] = (long)r * pattern.Cols + pattern.ColIdx[k];
        }
        // Drop the smallest magnitudes (ties: the earlier entry).
        var dropped = Enumerable.Range(0, nnz).OrderBy(k => Math.Abs(values[k])).ThenBy(k => k).Take(drop).ToHashSet();
        var kept = Enumerable.Range(0, nnz).Where(k => !dropped.Contains(k)).ToArray();
        var grown = Regrow(layer, drop, [.. kept.Select(k => flat[k])]);
        if (grown.Count != drop)
            throw new InvalidOperationException($"{GetType().Name}: regrowth gave {grown.Count} positions for {drop} dropped weights");
        var entries = kept.Select(k => (Flat: flat[k], Source: k)).Concat(grown.Select(g => (Flat: g, Source: -1))).OrderBy(e => e.Flat).ToArray();
        var rowPtr = new int[pattern.Rows + 1];
        var colIdx = new int[nnz];
        var source = new int[nnz];
        for (var i = 0; i < nnz; i++)
        {
            rowPtr[entries[i].Flat / pattern.Cols + 1]++;
            colIdx[i] = (int)(entries[i].Flat % pattern.Cols);
            source[i] = entries[i].Source;
        }
        for (var r = 0; r < pattern.Rows; r++)
            rowPtr[r + 1] += rowPtr[r];
        layer.UpdatePattern(CsrPattern.FromParts(pattern.Rows, pattern.Cols, rowPtr, colIdx), source, _optimizer);
    }

    private static IEnumerable<Module> Descendants(Module m)
    {
        yield return m;
        foreach (var c in m.Children())
        {
            foreach (var d in Descendants(c))
                yield return d;
        }
    }
}

/// <summary>Sparse Evolutionary Training (Mocanu et al., 2018): regrowth at uniformly random empty positions.</summary>
public sealed class Set(Module model, Optimizer optimizer, int updateEvery, double dropFraction, long endStep, int seed = 0)
    : DynamicSparsity(model, optimizer, updateEvery, dropFraction, endStep)
{
    private readonly Random _random = new(seed);

    /// <inheritdoc/>
    protected override IReadOnlyCollection<long> Regrow(SparseLinear layer, int count, HashSet<long> occupied)
    {
        var size = (long)layer.Pattern.Rows * layer.Pattern.Cols;
        var grown = new HashSet<long>();
        while (grown.Count < count)
        {
            var candidate = _random.NextInt64(size);
            if (!occupied.Contains(candidate))
                grown.Add(candidate);
        }
        return grown;
    }
}

/// <summary>RigL (Evci et al., 2020): regrowth where the dense gradient is largest among positions that were empty
/// before the update. The dense gradient is computed only on update steps, a few rows at a time in a bounded
/// Workspace buffer, during that step's backward.</summary>
public sealed class RigL(Module model, Optimizer optimizer, int updateEvery, double dropFraction, long endStep)
    : DynamicSparsity(model, optimizer, updateEvery, dropFraction, endStep)
{
    /// <inheritdoc/>
    protected override void BeforeUpdateStep(double fraction)
    {
        foreach (var layer in Layers)
            layer.PendingGrowth = new GrowthScores(DropCount(layer, fraction));
    }

    /// <inheritdoc/>
    protected override IReadOnlyCollection<long> Regrow(SparseLinear layer, int count, HashSet<long> occupied)
    {
        var scores = layer.PendingGrowth;
        layer.PendingGrowth = null;
        if (scores is null || !scores.Filled)
            throw new InvalidOperationException("RigL: no dense-gradient scores for this update step: call Step() after every optimizer step, with a backward through the model in between");
        return [.. scores.Candidates.Select(c => c.Flat).Where(f => !occupied.Contains(f)).Take(count)];
    }
}
