using Frugal.Formats;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Training.Sparsity;

/// <summary>
/// Dynamic sparse training over a model's sparse weights (<see cref="SparseWeight"/>) (CSR or BSR; for BSR every entry below is a
/// block and a block's magnitude is the L1 norm of its values): every <c>updateEvery</c> steps until
/// <c>endStep</c>, each layer drops the fraction of its stored entries with the smallest magnitudes and regrows
/// entries at empty positions chosen by the method. The drop fraction decays with a cosine from
/// <c>dropFraction</c> to 0 at <c>endStep</c> (as in RigL). Regrown weights and their optimizer state start at zero;
/// surviving weights keep their values and state. Call <see cref="Step"/> after each optimizer step and ZeroGrad.
/// </summary>
public abstract class DynamicSparsity
{
    /// <summary>The method on every sparse layer of <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">The model has no sparse layer, or the schedule is invalid.</exception>
    protected DynamicSparsity(Module model, Optimizer optimizer, int updateEvery, double dropFraction, long endStep)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        var name = GetType().Name;
        Layers = [.. model.Weights().Select(w => w.Weight).OfType<SparseWeight>()];
        if (Layers.Count == 0)
            throw new ArgumentException($"{name}: {model.GetType().Name} has no sparse layer to update (give its Linear or Conv2d layers a csr or bsr format)");
        if (updateEvery <= 0 || endStep <= 0 || !(dropFraction > 0 && dropFraction < 1))
            throw new ArgumentException($"{name}: need updateEvery > 0, endStep > 0 and dropFraction in (0, 1), got {updateEvery}, {endStep}, {dropFraction}");
        (Optimizer, UpdateEvery, DropFraction, EndStep) = (optimizer, updateEvery, dropFraction, endStep);
    }

    /// <summary>The sparse layers updated.</summary>
    protected IReadOnlyList<SparseWeight> Layers { get; }

    /// <summary>The optimizer whose state follows the patterns.</summary>
    protected Optimizer Optimizer { get; }

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

    /// <summary>How many entries a layer drops at drop fraction <paramref name="fraction"/>.</summary>
    protected static int DropCount(SparseWeight layer, double fraction) => (int)Math.Round(fraction * layer.Pattern.Nnz);

    /// <summary>Continues from a checkpoint taken after <paramref name="steps"/> steps and <paramref name="updates"/>
    /// pattern updates (the patterns themselves are in the model), preparing the next step if it updates.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative count.</exception>
    public void Resume(long steps, int updates)
    {
        if (steps < 0 || updates < 0)
            throw new ArgumentOutOfRangeException(nameof(steps), $"{GetType().Name}.Resume: steps {steps} and updates {updates} must be >= 0");
        (StepCount, Updates) = (steps, updates);
        if (IsUpdateStep(steps + 1))
            BeforeUpdateStep(DropFractionAt(steps + 1));
    }

    /// <summary>Counts one training step; updates the patterns on update steps and prepares the next one.
    /// Returns true when it updated.</summary>
    public bool Step()
    {
        var step = ++StepCount;
        var updated = false;
        if (IsUpdateStep(step))
        {
            var fraction = DropFractionAt(step);
            var drops = Layers.Select(l => DropCount(l, fraction)).ToArray();
            var grows = GrowCounts(drops);
            for (var i = 0; i < Layers.Count; i++)
                Update(Layers[i], drops[i], grows[i]);
            Updates++;
            updated = true;
        }
        if (IsUpdateStep(step + 1))
            BeforeUpdateStep(DropFractionAt(step + 1));
        return updated;
    }

    /// <summary>How many entries each layer regrows, given how many each drops: as many as it dropped (SET, RigL);
    /// SNFS redistributes them across layers.</summary>
    protected virtual int[] GrowCounts(int[] drops) => drops;

    /// <summary>Called before the step that will update (RigL arms its gradient request here).</summary>
    protected virtual void BeforeUpdateStep(double fraction)
    {
    }

    /// <summary>The flat positions (row · cols + col of the pattern's grid) where <paramref name="count"/> entries
    /// regrow, none of them in <paramref name="occupied"/> (the surviving entries).</summary>
    protected abstract IReadOnlyCollection<long> Regrow(SparseWeight layer, int count, HashSet<long> occupied);

    /// <summary>The empty positions of largest dense-gradient score that the layer's last backward found (RigL,
    /// SNFS), best first, at most <paramref name="count"/>.</summary>
    /// <exception cref="InvalidOperationException">No scores were computed for this update step.</exception>
    protected static IReadOnlyCollection<long> RegrowByGradient(SparseWeight layer, int count, HashSet<long> occupied, string method)
    {
        var scores = layer.PendingGrowth;
        layer.PendingGrowth = null;
        if (scores is null || !scores.Filled)
            throw new InvalidOperationException($"{method}: no dense-gradient scores for this update step: call Step() after every optimizer step, with a backward through the model in between");
        return [.. scores.Candidates.Select(c => c.Flat).Where(f => !occupied.Contains(f)).Take(count)];
    }

    private void Update(SparseWeight layer, int drop, int grow)
    {
        var pattern = layer.Pattern;
        var nnz = pattern.Nnz;
        if (drop == 0 && grow == 0)
            return;
        var area = layer.Block * layer.Block;
        var values = layer.Values.ToArray<float>();
        var magnitude = new float[nnz];
        for (var k = 0; k < nnz; k++)
        {
            for (var t = 0; t < area; t++)
                magnitude[k] += Math.Abs(values[k * area + t]);
        }
        var flat = new long[nnz];
        for (var r = 0; r < pattern.Rows; r++)
        {
            for (var k = pattern.RowPtr[r]; k < pattern.RowPtr[r + 1]; k++)
                flat[k] = (long)r * pattern.Cols + pattern.ColIdx[k];
        }
        // Drop the smallest magnitudes (ties: the earlier entry).
        var dropped = Enumerable.Range(0, nnz).OrderBy(k => magnitude[k]).ThenBy(k => k).Take(drop).ToHashSet();
        var kept = Enumerable.Range(0, nnz).Where(k => !dropped.Contains(k)).ToArray();
        var grown = Regrow(layer, grow, [.. kept.Select(k => flat[k])]);
        if (grown.Count != grow)
            throw new InvalidOperationException($"{GetType().Name}: regrowth gave {grown.Count} positions for {grow} requested in {layer}");
        var entries = kept.Select(k => (Flat: flat[k], Source: k)).Concat(grown.Select(g => (Flat: g, Source: -1))).OrderBy(e => e.Flat).ToArray();
        var rowPtr = new int[pattern.Rows + 1];
        var colIdx = new int[entries.Length];
        var source = new int[entries.Length];
        for (var i = 0; i < entries.Length; i++)
        {
            rowPtr[entries[i].Flat / pattern.Cols + 1]++;
            colIdx[i] = (int)(entries[i].Flat % pattern.Cols);
            source[i] = entries[i].Source;
        }
        for (var r = 0; r < pattern.Rows; r++)
            rowPtr[r + 1] += rowPtr[r];
        layer.UpdatePattern(CsrPattern.FromParts(pattern.Rows, pattern.Cols, rowPtr, colIdx), source, Optimizer);
    }
}

/// <summary>Sparse Evolutionary Training (Mocanu et al., 2018): regrowth at uniformly random empty positions.</summary>
public sealed class Set(Module model, Optimizer optimizer, int updateEvery, double dropFraction, long endStep, int seed = 0)
    : DynamicSparsity(model, optimizer, updateEvery, dropFraction, endStep)
{
    private readonly Random _random = new(seed);

    /// <inheritdoc/>
    protected override IReadOnlyCollection<long> Regrow(SparseWeight layer, int count, HashSet<long> occupied)
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
    protected override IReadOnlyCollection<long> Regrow(SparseWeight layer, int count, HashSet<long> occupied)
        => RegrowByGradient(layer, count, occupied, nameof(RigL));
}

/// <summary>
/// Sparse momentum (SNFS; Dettmers and Zettlemoyer, 2019): each layer drops its smallest-magnitude entries, and
/// the dropped total is redistributed across layers in proportion to each layer's mean momentum magnitude over its
/// stored weights (the optimizer's momentum, Adam's first moment), so layers whose weights keep moving get more
/// entries; a layer never grows beyond its size and the surplus goes to the others. Within a layer the entries regrow
/// where the dense gradient is largest, as RigL's: the paper's criterion is the momentum of the empty positions, but
/// a sparse layer keeps no momentum there (keeping one would be the dense copy this format exists to avoid), and
/// the dense gradient of the update step is what that momentum would start from.
/// </summary>
public sealed class Snfs : DynamicSparsity
{
    /// <summary>SNFS over <paramref name="model"/>'s sparse layers.</summary>
    /// <exception cref="ArgumentException">The optimizer keeps no momentum, or as the base class.</exception>
    public Snfs(Module model, Optimizer optimizer, int updateEvery, double dropFraction, long endStep)
        : base(model, optimizer, updateEvery, dropFraction, endStep)
    {
        if (!optimizer.HasMomentum)
            throw new ArgumentException($"Snfs: {optimizer.GetType().Name} keeps no momentum to redistribute by; use Adam, AdamW or SGD with momentum > 0");
    }

    /// <summary>The share of the regrowth each layer got at the last update (for reports).</summary>
    public IReadOnlyList<double> LastShares { get; private set; } = [];

    /// <inheritdoc/>
    protected override void BeforeUpdateStep(double fraction)
    {
        // Any layer may receive the whole regrowth: ask each for that many candidates.
        var total = Layers.Sum(l => DropCount(l, fraction));
        foreach (var layer in Layers)
            layer.PendingGrowth = new GrowthScores(total);
    }

    /// <inheritdoc/>
    protected override int[] GrowCounts(int[] drops)
    {
        var total = drops.Sum();
        var momentum = Layers.Select(MeanMomentum).ToArray();
        var sum = momentum.Sum();
        var shares = sum > 0 ? momentum.Select(m => m / sum).ToArray() : [.. Layers.Select(_ => 1.0 / Layers.Count)];
        LastShares = shares;
        // Each layer's room: its empty positions after the drop, at most the candidates its backward found.
        var room = Layers.Select((l, i) => (int)Math.Min((long)l.Pattern.Rows * l.Pattern.Cols - (l.Pattern.Nnz - drops[i]),
            l.PendingGrowth?.Candidates.Count ?? 0)).ToArray();
        var grows = new int[Layers.Count];
        var left = total;
        while (left > 0)
        {
            var open = Enumerable.Range(0, Layers.Count).Where(i => grows[i] < room[i]).ToList();
            if (open.Count == 0)
                break;
            var weight = open.Sum(i => shares[i]);
            var given = 0;
            foreach (var i in open)
            {
                var want = weight > 0 ? (int)Math.Floor(left * shares[i] / weight) : left / open.Count;
                var take = Math.Min(want, room[i] - grows[i]);
                grows[i] += take;
                given += take;
            }
            // Rounding leftovers: one more each to the open layers with the largest shares.
            foreach (var i in open.OrderByDescending(i => shares[i]))
            {
                if (given >= left)
                    break;
                if (grows[i] < room[i])
                {
                    grows[i]++;
                    given++;
                }
            }
            left -= given;
        }
        return grows;
    }

    /// <inheritdoc/>
    protected override IReadOnlyCollection<long> Regrow(SparseWeight layer, int count, HashSet<long> occupied)
        => RegrowByGradient(layer, count, occupied, nameof(Snfs));

    private double MeanMomentum(SparseWeight layer)
    {
        var m = Optimizer.MomentumOf(layer.Values);
        if (m is null)
            return 0;
        var values = m.To(DType.F32);
        try
        {
            return values.ToArray<float>().Average(v => Math.Abs((double)v));
        }
        finally
        {
            values.Dispose();
        }
    }
}
