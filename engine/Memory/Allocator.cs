namespace Frugal.Memory;

/// <summary>A device's memory: allocation with a category and owner, exact byte counters per category, and a
/// size-bucketed cache of freed blocks underneath (as PyTorch's caching allocator). Subclasses provide raw
/// allocation; the accounting and the cache are shared, so memory claims measured on the CPU hold on every device.</summary>
public abstract class Allocator
{
    private readonly Lock _lock = new();
    private readonly long[] _current = new long[MemoryCategories.All.Count];
    private readonly long[] _peak = new long[MemoryCategories.All.Count];
    private readonly Dictionary<long, Stack<nint>> _cache = [];
    private long _currentTotal;
    private long _peakTotal;
    private long _cachedBytes;
    private long _reservedBytes;
    private long _allocations;

    /// <summary>Largest number of free bytes the cache keeps before returning blocks to the system.</summary>
    public long CacheLimitBytes { get; set; } = 2L << 30;

    /// <summary>The most bytes this allocator may reserve (live and cached blocks), or null for no limit but the
    /// device's: an allocation beyond it fails as the device would when full, with an
    /// <see cref="OutOfMemoryException"/> whose message holds the bytes per category (PyTorch's per-process memory
    /// fraction). For trying whether training fits a smaller device, on this one.</summary>
    public long? LimitBytes { get; set; }

    /// <summary>Called for every allocation and free while profiling (event, buffer).</summary>
    public event Action<MemoryEvent>? Observed;

    /// <summary>Allocates <paramref name="bytes"/> for <paramref name="category"/> on behalf of <paramref name="owner"/>.</summary>
    public DeviceBuffer Allocate(long bytes, MemoryCategory category, string owner)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        var reserved = CachesBlocks ? BucketSize(bytes) : Math.Max(bytes, 1);
        nint address = 0;
        lock (_lock)
        {
            if (CachesBlocks && _cache.TryGetValue(reserved, out var stack) && stack.Count > 0)
            {
                address = stack.Pop();
                _cachedBytes -= reserved;
            }
        }
        if (address == 0)
        {
            address = RawAllocateWithRetry(reserved, category, owner);
            lock (_lock)
                _reservedBytes += reserved;
        }
        var buffer = new DeviceBuffer(this, address, bytes, reserved, category, owner);
        lock (_lock)
        {
            _allocations++;
            _current[(int)category] += bytes;
            _currentTotal += bytes;
            _peak[(int)category] = Math.Max(_peak[(int)category], _current[(int)category]);
            _peakTotal = Math.Max(_peakTotal, _currentTotal);
        }
        Observed?.Invoke(new MemoryEvent(MemoryEventKind.Allocate, bytes, category, owner));
        return buffer;
    }

    private nint RawAllocateWithRetry(long bytes, MemoryCategory category, string owner)
    {
        try
        {
            return RawAllocateWithinLimit(bytes);
        }
        catch (OutOfMemoryException)
        {
            EmptyCache();
            try
            {
                return RawAllocateWithinLimit(bytes);
            }
            catch (OutOfMemoryException e)
            {
                var limit = LimitBytes is { } l ? $" (limit {l:N0} bytes, {_reservedBytes:N0} reserved)" : "";
                throw new OutOfMemoryException($"{Name}: out of memory allocating {bytes:N0} bytes of {category} for '{owner}'{limit}.\n{Stats()}", e);
            }
        }
    }

    private nint RawAllocateWithinLimit(long bytes)
    {
        if (LimitBytes is { } limit && Interlocked.Read(ref _reservedBytes) + bytes > limit)
            throw new OutOfMemoryException();
        return RawAllocate(bytes);
    }

    internal void Free(DeviceBuffer buffer)
    {
        var release = false;
        lock (_lock)
        {
            _current[(int)buffer.Category] -= buffer.Bytes;
            _currentTotal -= buffer.Bytes;
            if (CachesBlocks && _cachedBytes + buffer.ReservedBytes <= CacheLimitBytes)
            {
                if (!_cache.TryGetValue(buffer.ReservedBytes, out var stack))
                    _cache[buffer.ReservedBytes] = stack = new Stack<nint>();
                stack.Push(buffer.Address);
                _cachedBytes += buffer.ReservedBytes;
            }
            else
            {
                release = true;
                _reservedBytes -= buffer.ReservedBytes;
            }
        }
        if (release)
            RawFree(buffer.Address, buffer.ReservedBytes);
        Observed?.Invoke(new MemoryEvent(MemoryEventKind.Free, buffer.Bytes, buffer.Category, buffer.Owner));
    }

    /// <summary>Moves a live buffer to another category and/or owner: the counters follow, and a profiler sees a free
    /// under the old label and an allocation under the new.</summary>
    internal void Move(DeviceBuffer buffer, MemoryCategory from, MemoryCategory to, string fromOwner, string toOwner)
    {
        if (from != to)
        {
            lock (_lock)
            {
                _current[(int)from] -= buffer.Bytes;
                _current[(int)to] += buffer.Bytes;
                _peak[(int)to] = Math.Max(_peak[(int)to], _current[(int)to]);
            }
        }
        Observed?.Invoke(new MemoryEvent(MemoryEventKind.Free, buffer.Bytes, from, fromOwner));
        Observed?.Invoke(new MemoryEvent(MemoryEventKind.Allocate, buffer.Bytes, to, toOwner));
    }

    /// <summary>Returns every cached free block to the system.</summary>
    public void EmptyCache()
    {
        List<(nint, long)> blocks = [];
        lock (_lock)
        {
            foreach (var (size, stack) in _cache)
            {
                while (stack.Count > 0)
                    blocks.Add((stack.Pop(), size));
            }
            _reservedBytes -= _cachedBytes;
            _cachedBytes = 0;
        }
        foreach (var (address, size) in blocks)
            RawFree(address, size);
    }

    /// <summary>A snapshot of the counters.</summary>
    public MemoryStats Stats()
    {
        lock (_lock)
            return new MemoryStats(Name, (long[])_current.Clone(), (long[])_peak.Clone(), _currentTotal, _peakTotal, _cachedBytes, _reservedBytes, _allocations);
    }

    /// <summary>Current bytes of one category.</summary>
    public long Current(MemoryCategory category)
    {
        lock (_lock)
            return _current[(int)category];
    }

    /// <summary>Peak bytes of one category since creation or the last <see cref="ResetPeak"/>.</summary>
    public long Peak(MemoryCategory category)
    {
        lock (_lock)
            return _peak[(int)category];
    }

    /// <summary>Sets every peak to the current value.</summary>
    public void ResetPeak()
    {
        lock (_lock)
        {
            Array.Copy(_current, _peak, _current.Length);
            _peakTotal = _currentTotal;
        }
    }

    /// <summary>Size bucket of a request: 64-byte granularity below 4 KiB, then quarter powers of two,
    /// so a block wastes at most a quarter of itself and freed blocks are reused by similar sizes.</summary>
    public static long BucketSize(long bytes)
    {
        if (bytes <= 4096)
            return Math.Max(64, (bytes + 63) & ~63L);
        var pow = 63 - (int)long.LeadingZeroCount(bytes - 1);   // 2^pow < bytes <= 2^(pow+1)
        var quarter = 1L << (pow - 2);
        return (bytes + quarter - 1) / quarter * quarter;
    }

    /// <summary>Whether blocks are rounded to size buckets and kept for reuse when freed (the default). Without
    /// caching every block has exactly the requested size (at least a byte) and goes back to the system when its
    /// buffer is freed, so a memory checker below (the CUDA emulator's guard pages and freed-memory quarantine)
    /// sees each buffer as its own allocation: PyTorch's <c>PYTORCH_NO_CUDA_MEMORY_CACHING</c>.</summary>
    protected virtual bool CachesBlocks => true;

    /// <summary>Device name for messages.</summary>
    public abstract string Name { get; }

    /// <summary>Raw allocation of exactly <paramref name="bytes"/>; throws <see cref="OutOfMemoryException"/> when none is left.</summary>
    protected abstract nint RawAllocate(long bytes);

    /// <summary>Bytes the device's driver reports in use (all processes and contexts: CUDA's total − free), or null
    /// where there is no such report (the CPU). The profiler shows it beside its own count.</summary>
    public virtual long? DriverUsedBytes() => null;

    /// <summary>Raw free.</summary>
    protected abstract void RawFree(nint address, long bytes);
}

/// <summary>Kind of allocator event.</summary>
public enum MemoryEventKind
{
    /// <summary>A buffer was allocated.</summary>
    Allocate,
    /// <summary>A buffer was freed.</summary>
    Free,
}

/// <summary>One allocator event, as a profiler records it.</summary>
public readonly record struct MemoryEvent(MemoryEventKind Kind, long Bytes, MemoryCategory Category, string Owner);
