namespace Frugal.Training.Sparsity;

/// <summary>How a global density is spread over layers.</summary>
public static class Distribution
{
    /// <summary>Every layer at the global density.</summary>
    public static double[] Uniform(IReadOnlyList<(int Rows, int Cols)> shapes, double density)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        CheckDensity(density);
        return [.. shapes.Select(_ => density)];
    }

    /// <summary>Erdős–Rényi (Mocanu et al.; for dense layers as RigL's ERK): layer i's density is proportional to
    /// (rows + cols) / (rows · cols), scaled so the stored total equals <paramref name="density"/> of all weights;
    /// layers that would exceed 1 are made dense and the rest rescaled.</summary>
    public static double[] Erk(IReadOnlyList<(int Rows, int Cols)> shapes, double density)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        return Erk([.. shapes.Select(s => new[] { s.Rows, s.Cols })], density);
    }

    /// <summary>Erdős–Rényi-Kernel (RigL's ERK) over weights of any rank: layer i's density is proportional to the
    /// sum of its dimensions over their product ((out + in + kh + kw) / (out · in · kh · kw) for a convolution),
    /// scaled so the stored total equals <paramref name="density"/> of all weights; layers that would exceed 1 are
    /// made dense and the rest rescaled.</summary>
    public static double[] Erk(IReadOnlyList<int[]> shapes, double density)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        CheckDensity(density);
        var sizes = shapes.Select(s => s.Aggregate(1.0, (p, d) => p * d)).ToArray();
        var raw = shapes.Select((s, i) => s.Sum() / sizes[i]).ToArray();
        var dense = new bool[shapes.Count];
        var budget = density * sizes.Sum();
        while (true)
        {
            var free = Enumerable.Range(0, shapes.Count).Where(i => !dense[i]).ToArray();
            var remaining = budget - Enumerable.Range(0, shapes.Count).Where(i => dense[i]).Sum(i => sizes[i]);
            var scale = remaining / free.Sum(i => raw[i] * sizes[i]);
            var over = free.Where(i => scale * raw[i] >= 1).ToArray();
            if (over.Length == 0)
                return [.. Enumerable.Range(0, shapes.Count).Select(i => dense[i] ? 1.0 : scale * raw[i])];
            foreach (var i in over)
                dense[i] = true;
        }
    }

    private static void CheckDensity(double density)
    {
        if (!(density > 0 && density <= 1))
            throw new ArgumentOutOfRangeException(nameof(density), $"density must be in (0, 1], got {density}");
    }
}
