using System.Globalization;
using System.Text;

namespace Frugal.Memory;

/// <summary>A snapshot of an allocator's counters. Category bytes are the exact requested sizes; reserved and
/// cached bytes are the size-bucketed blocks the cache holds (cached = reserved but free).</summary>
public sealed class MemoryStats
{
    private readonly long[] _current;
    private readonly long[] _peak;

    internal MemoryStats(string device, long[] current, long[] peak, long currentTotal, long peakTotal, long cached, long reserved, long allocations)
    {
        Device = device;
        _current = current;
        _peak = peak;
        CurrentTotal = currentTotal;
        PeakTotal = peakTotal;
        CachedBytes = cached;
        ReservedBytes = reserved;
        Allocations = allocations;
    }

    /// <summary>Device the counters belong to.</summary>
    public string Device { get; }

    /// <summary>Bytes live now in a category.</summary>
    public long Current(MemoryCategory c) => _current[(int)c];

    /// <summary>Largest bytes live at once in a category.</summary>
    public long Peak(MemoryCategory c) => _peak[(int)c];

    /// <summary>Bytes live now, all categories.</summary>
    public long CurrentTotal { get; }

    /// <summary>Largest bytes live at once, all categories together.</summary>
    public long PeakTotal { get; }

    /// <summary>Bytes the cache holds free for reuse.</summary>
    public long CachedBytes { get; }

    /// <summary>Bytes held from the system (live blocks at their bucket size, plus the cache).</summary>
    public long ReservedBytes { get; }

    /// <summary>Number of allocations served so far.</summary>
    public long Allocations { get; }

    /// <summary>Human-readable byte count (KiB, MiB, GiB).</summary>
    public static string FormatBytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        var u = 0;
        while (Math.Abs(v) >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }
        return u == 0 ? $"{bytes} B" : v.ToString("0.00", CultureInfo.InvariantCulture) + " " + units[u];
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"category",-16}{"current",16}{"peak",16}");
        foreach (var c in MemoryCategories.All)
            sb.AppendLine(CultureInfo.InvariantCulture, $"{c,-16}{FormatBytes(Current(c)),16}{FormatBytes(Peak(c)),16}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"total",-16}{FormatBytes(CurrentTotal),16}{FormatBytes(PeakTotal),16}");
        sb.Append(CultureInfo.InvariantCulture, $"cache: {FormatBytes(CachedBytes)} free of {FormatBytes(ReservedBytes)} reserved");
        return sb.ToString();
    }
}
