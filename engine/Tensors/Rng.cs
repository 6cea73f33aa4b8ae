namespace Frugal;

/// <summary>The global random stream of ops that draw numbers (dropout): a seed and a counter of numbers used.
/// Every draw takes a fresh counter range, so results depend only on the seed and the order of draws —
/// not on threads or devices. <see cref="Checkpoint"/> rewinds it to recompute the same masks.</summary>
public static class Rng
{
    [ThreadStatic] private static ulong t_seed;
    [ThreadStatic] private static ulong t_offset;

    /// <summary>Seeds the stream (and restarts its counter).</summary>
    public static void ManualSeed(ulong seed)
    {
        t_seed = seed;
        t_offset = 0;
    }

    /// <summary>The current (seed, counter) pair.</summary>
    public static (ulong Seed, ulong Offset) State
    {
        get => (t_seed, t_offset);
        set => (t_seed, t_offset) = value;
    }

    /// <summary>Reserves <paramref name="count"/> numbers; returns (seed, first counter).</summary>
    internal static (ulong Seed, ulong Offset) Take(long count)
    {
        var r = (t_seed, t_offset);
        t_offset += (ulong)count;
        return r;
    }
}
