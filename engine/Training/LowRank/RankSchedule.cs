using Frugal.Formats;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Training.LowRank;

/// <summary>
/// Rank reduction during training: at each given step every low-rank weight (<see cref="LowRankWeight"/>) of the model keeps a
/// fraction of its initial rank (at least 1), dropping its smallest singular directions with
/// <see cref="LowRankWeight.Truncate"/>; the optimizer's state is carried over. Call <see cref="Step"/> after each
/// optimizer step and ZeroGrad.
/// </summary>
public sealed class RankSchedule
{
    private readonly Optimizer _optimizer;
    private readonly (LowRankWeight Layer, int Initial)[] _layers;
    private readonly SortedDictionary<long, double> _points = [];

    /// <summary>At step <c>Step</c> (1-based, counted by <see cref="Step"/>), keep the fraction <c>Keep</c> of each
    /// layer's initial rank.</summary>
    /// <exception cref="ArgumentException">No low-rank layer, a step ≤ 0 given twice, or a fraction outside (0, 1].</exception>
    public RankSchedule(Module model, Optimizer optimizer, IEnumerable<(long Step, double Keep)> points)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(points);
        _optimizer = optimizer;
        _layers = [.. model.Weights().Select(w => w.Weight).OfType<LowRankWeight>().Select(l => (l, l.Rank))];
        if (_layers.Length == 0)
            throw new ArgumentException($"RankSchedule: {model.GetType().Name} has no low-rank layer (give it a lowrank format)");
        foreach (var (step, keep) in points)
        {
            if (step <= 0 || !(keep > 0 && keep <= 1) || !_points.TryAdd(step, keep))
                throw new ArgumentException($"RankSchedule: need distinct steps > 0 and fractions in (0, 1], got step {step}, fraction {keep}");
        }
    }

    /// <summary>Steps counted so far.</summary>
    public long StepCount { get; private set; }

    /// <summary>Counts one step; truncates on scheduled steps and returns the energy discarded then (0 otherwise).</summary>
    public double Step()
    {
        if (!_points.TryGetValue(++StepCount, out var keep))
            return 0;
        double discarded = 0;
        foreach (var (layer, initial) in _layers)
        {
            var rank = Math.Max(1, (int)Math.Round(keep * initial));
            if (rank < layer.Rank)
                discarded += layer.Truncate(rank, _optimizer);
        }
        return discarded;
    }
}
