using Frugal.Formats;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Training.Sparsity;

/// <summary>
/// Sparse Evolutionary Training (Mocanu et al., 2018) over a model's <see cref="SparseLinear"/> layers: every
/// <c>updateEvery</c> steps until <c>endStep</c>, each layer drops the fraction of its stored weights with the
/// smallest magnitudes and regrows as many at random empty positions, so its density stays constant. The drop
/// fraction decays with a cosine from <c>dropFraction</c> to 0 at <c>endStep</c> (as in RigL). Regrown weights
/// and their optimizer state start at zero; surviving weights keep their values and state.
/// </summary>
public sealed class Set
{
    private readonly SparseLinear[] _layers;
    private readonly Optimizer _optimizer;
    private readonly Random _random;

    /// <summary>SET on every sparse layer of <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">The model has no sparse layer, or the schedule is invalid.</exception>
    public Set(Module model, Optimizer optimizer, int updateEvery, double dropFraction, long endStep, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        _layers = [.. Descendants(model).OfType<SparseLinear>()];
        if (_layers.Length == 0)
            throw new ArgumentException($"SET: {model.GetType().Name} has no sparse layer to update (give its Linear layers a csr format)");
        if (updateEvery <= 0 || endStep <= 0 || !(dropFraction > 0 && dropFraction < 1))
            throw new ArgumentException($"SET: need updateEvery > 0, endStep > 0 and dropFraction in (0, 1), got {updateEvery}, {endStep}, {dropFraction}");
        (_optimizer, UpdateEvery, DropFraction, EndStep, _random) = (optimizer, updateEvery, dropFraction, endStep, new Random(seed));
    }

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

    /// <summary>Counts one training step (call after the optimizer step and ZeroGrad); updates the patterns on
    /// update steps. Returns true when it did.</summary>
    public bool Step()
    {
        var step = ++StepCount;
        if (step % UpdateEvery != 0 || step >= EndStep)
            return false;
        var fraction = DropFractionAt(step);
        foreach (var layer in _layers)
            Update(layer, fraction);
        Updates++;
        return true;
    }

    private void Update(SparseLinear layer, double fraction)
    {
        var pattern = layer.Pattern;
        var values = layer.Values.ToArray<float>();
        var nnz = pattern.Nnz;
        var drop = (int)Math.Round(fraction * nnz);
        if (drop == 0)
            return;
        // Flat position of every stored entry; drop the smallest magnitudes (ties: the earlier entry).
        var flat = new long[nnz];
        for (var r = 0; r < pattern.Rows; r++)
        {
            for (var k = pattern.RowPtr[r]; k < pattern.RowPtr[r + 1]; k++)
                flat[k] = (long)r * pattern.Cols + pattern.ColIdx[k];
        }
        var byMagnitude = Enumerable.Range(0, nnz).OrderBy(k => Math.Abs(values[k])).ThenBy(k => k).ToArray();
        var dropped = byMagnitude.AsSpan(0, drop).ToArray().ToHashSet();
        var kept = Enumerable.Range(0, nnz).Where(k => !dropped.Contains(k)).ToArray();
        var occupied = kept.Select(k => flat[k]).ToHashSet();
        // Regrow at uniformly random positions that hold no surviving weight (a dropped one may come back at zero).
        var size = (long)pattern.Rows * pattern.Cols;
        var grown = new HashSet<long>();
        while (grown.Count < drop)
        {
            var candidate = _random.NextInt64(size);
            if (!occupied.Contains(candidate))
                grown.Add(candidate);
        }
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
