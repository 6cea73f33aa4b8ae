using System.Diagnostics;

namespace Frugal.Memory;

/// <summary>
/// Records every allocation and free of one device's allocator (time, bytes, category, owner, and the phase the
/// caller marked) from <see cref="Start"/> until disposed, and reports peak and current bytes per category, per
/// module, per format, and the timeline with the moment of peak and what was live then. One profiler per device at a
/// time. Bytes are the allocator's exact bytes; on CUDA the driver's own count is reported beside them.
/// </summary>
public sealed class MemoryProfiler : IDisposable
{
    private static readonly Lock s_lock = new();
    private static readonly HashSet<Allocator> s_active = new(ReferenceEqualityComparer.Instance);

    private readonly Lock _lock = new();
    private readonly Allocator _allocator;
    private readonly string _device;
    private readonly long[] _baseline;
    private readonly List<ProfiledEvent> _events = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private string _phase = "";
    private bool _disposed;

    private MemoryProfiler(Device device)
    {
        _allocator = device.Allocator;
        _device = device.Name;
        var stats = _allocator.Stats();
        _baseline = [.. MemoryCategories.All.Select(stats.Current)];
        _allocator.ResetPeak();
        _allocator.Observed += OnEvent;
    }

    /// <summary>Starts recording <paramref name="device"/>'s allocator; resets its peaks, so the report's peak and
    /// the allocator's agree. What is already allocated counts as the baseline (owner "(before profiling)").</summary>
    /// <exception cref="InvalidOperationException">A profiler is already recording this device.</exception>
    public static MemoryProfiler Start(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        lock (s_lock)
        {
            if (!s_active.Add(device.Allocator))
                throw new InvalidOperationException($"MemoryProfiler: {device.Name} is already being profiled; dispose that profiler first");
        }
        return new MemoryProfiler(device);
    }

    /// <summary>Labels the events that follow (e.g. "step 3 forward") until the next mark.</summary>
    public void Mark(string phase)
    {
        ArgumentNullException.ThrowIfNull(phase);
        lock (_lock)
            _phase = phase;
    }

    /// <summary>Events recorded so far.</summary>
    public int EventCount
    {
        get
        {
            lock (_lock)
                return _events.Count;
        }
    }

    private void OnEvent(MemoryEvent e)
    {
        lock (_lock)
            _events.Add(new ProfiledEvent(_events.Count, _clock.Elapsed.TotalMilliseconds, e.Kind, e.Bytes, e.Category, e.Owner, _phase));
    }

    /// <summary>The report so far. <paramref name="formats"/> maps module paths to their weight format (e.g. from
    /// <c>Module.FormatsByPath()</c>); a buffer belongs to the longest module path its owner starts with.</summary>
    public MemoryReport Report(IReadOnlyDictionary<string, string>? formats = null)
    {
        ProfiledEvent[] events;
        lock (_lock)
            events = [.. _events];
        var categories = MemoryCategories.All.Count;
        var current = (long[])_baseline.Clone();
        var peak = (long[])_baseline.Clone();
        long total = _baseline.Sum(), peakTotal = total;
        var peakIndex = -1;
        var live = new Dictionary<(string Owner, MemoryCategory Category), long>();
        for (var c = 0; c < categories; c++)
        {
            if (_baseline[c] != 0)
                live[("(before profiling)", (MemoryCategory)c)] = _baseline[c];
        }
        var atPeak = new Dictionary<(string Owner, MemoryCategory Category), long>(live);
        var timeline = new List<TimelinePoint>(events.Length + 1) { new(-1, 0, "", [.. current]) };
        foreach (var e in events)
        {
            var sign = e.Kind == MemoryEventKind.Allocate ? 1 : -1;
            current[(int)e.Category] += sign * e.Bytes;
            total += sign * e.Bytes;
            peak[(int)e.Category] = Math.Max(peak[(int)e.Category], current[(int)e.Category]);
            var key = (e.Owner, e.Category);
            var now = live.GetValueOrDefault(key) + sign * e.Bytes;
            if (now == 0)
                live.Remove(key);
            else
                live[key] = now;
            timeline.Add(new TimelinePoint(e.Index, e.Ms, e.Phase, [.. current]));
            if (total > peakTotal)
            {
                (peakTotal, peakIndex) = (total, e.Index);
                atPeak = new Dictionary<(string, MemoryCategory), long>(live);
            }
        }
        var stats = _allocator.Stats();
        var owners = atPeak.Where(kv => kv.Value != 0).Select(kv => new OwnerBytes(kv.Key.Owner, kv.Key.Category, kv.Value))
            .OrderByDescending(o => o.Bytes).ThenBy(o => o.Owner, StringComparer.Ordinal).ToList();
        var paths = formats?.Keys.OrderByDescending(k => k.Length).ToArray() ?? [];
        string ModuleOf(string owner) => paths.FirstOrDefault(p => p.Length == 0 || owner == p || owner.StartsWith(p + ".", StringComparison.Ordinal)) ?? owner;
        var perModule = Group(owners, o => ModuleOf(o.Owner));
        var perFormat = Group(owners, o => ModuleOf(o.Owner) is var m && formats is not null && formats.TryGetValue(m, out var f) ? f : "(no weight)");
        return new MemoryReport(
            _device,
            MemoryCategories.All.ToDictionary(c => c, c => peak[(int)c]),
            MemoryCategories.All.ToDictionary(c => c, c => current[(int)c]),
            peakTotal,
            total,
            stats.CachedBytes,
            stats.ReservedBytes,
            _allocator.DriverUsedBytes(),
            peakIndex,
            owners,
            perModule,
            perFormat,
            timeline);
    }

    private static IReadOnlyList<GroupBytes> Group(IEnumerable<OwnerBytes> owners, Func<OwnerBytes, string> key)
        => [.. owners.GroupBy(key).Select(g => new GroupBytes(g.Key, MemoryCategories.All.ToDictionary(c => c, c => g.Where(o => o.Category == c).Sum(o => o.Bytes))))
            .OrderByDescending(g => g.Bytes.Values.Sum()).ThenBy(g => g.Name, StringComparer.Ordinal)];

    /// <summary>Stops recording and frees the device for another profiler.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _allocator.Observed -= OnEvent;
        lock (s_lock)
            s_active.Remove(_allocator);
    }

    private readonly record struct ProfiledEvent(int Index, double Ms, MemoryEventKind Kind, long Bytes, MemoryCategory Category, string Owner, string Phase);
}

/// <summary>Bytes of one owner (module path, op or parameter name) in one category.</summary>
public sealed record OwnerBytes(string Owner, MemoryCategory Category, long Bytes);

/// <summary>Bytes per category of a group of owners (a module, a format).</summary>
public sealed record GroupBytes(string Name, IReadOnlyDictionary<MemoryCategory, long> Bytes);

/// <summary>The bytes per category (in <see cref="MemoryCategories.All"/> order) after event <c>Index</c> (-1: the
/// baseline), at <c>Ms</c> milliseconds into the profile, during phase <c>Phase</c>.</summary>
public sealed record TimelinePoint(int Index, double Ms, string Phase, long[] Bytes);

/// <summary>
/// What a profile found: peak and current bytes per category and in total (the total's peak is the most bytes live
/// at once), the allocator's cache (reserved and free bytes, not in any category), the driver's count where there is
/// one, the event at which the total peaked and what was live then (by owner, by module, by format), and the
/// timeline of bytes per category after every event.
/// </summary>
public sealed record MemoryReport(
    string Device,
    IReadOnlyDictionary<MemoryCategory, long> Peak,
    IReadOnlyDictionary<MemoryCategory, long> Current,
    long PeakTotal,
    long CurrentTotal,
    long CachedBytes,
    long ReservedBytes,
    long? DriverUsedBytes,
    int PeakIndex,
    IReadOnlyList<OwnerBytes> LiveAtPeak,
    IReadOnlyList<GroupBytes> PerModule,
    IReadOnlyList<GroupBytes> PerFormat,
    IReadOnlyList<TimelinePoint> Timeline)
{
    /// <summary>The check against the driver (CUDA): true when the driver reports at least the bytes the allocator has
    /// reserved (it also counts the context and other processes), false when it reports fewer (the allocator's
    /// accounting would be wrong), null without a driver count (the CPU).</summary>
    public bool? DriverAgrees => DriverUsedBytes is { } used ? used >= ReservedBytes : null;

    /// <summary>The timeline points of the events marked <paramref name="phasePrefix"/>… (e.g. one training step).</summary>
    public IReadOnlyList<TimelinePoint> Window(string phasePrefix)
        => [.. Timeline.Where(t => t.Phase.StartsWith(phasePrefix, StringComparison.Ordinal))];
}
