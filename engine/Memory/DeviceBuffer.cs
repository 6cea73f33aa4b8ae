namespace Frugal.Memory;

/// <summary>One allocation on a device: an address, its exact byte size, its category and owner.
/// Reference counted, because views and autograd's saved tensors share it; freed (returned to the allocator's
/// cache) when the last holder releases it.</summary>
public sealed class DeviceBuffer
{
    private int _refs = 1;

    internal DeviceBuffer(Allocator allocator, nint address, long bytes, long reserved, MemoryCategory category, string owner)
    {
        Allocator = allocator;
        Address = address;
        Bytes = bytes;
        ReservedBytes = reserved;
        Category = category;
        Owner = owner;
    }

    /// <summary>The allocator that made it.</summary>
    public Allocator Allocator { get; }

    /// <summary>Device address (a host pointer on the CPU).</summary>
    public nint Address { get; private set; }

    /// <summary>Bytes requested: what the accounting counts.</summary>
    public long Bytes { get; }

    /// <summary>Bytes of the cache block behind it (the size bucket).</summary>
    public long ReservedBytes { get; }

    /// <summary>What it is for.</summary>
    public MemoryCategory Category { get; private set; }

    /// <summary>Who it belongs to: a module path, an op, an optimizer.</summary>
    public string Owner { get; private set; }

    /// <summary>Number of holders now (1 for a buffer held by one tensor alone).</summary>
    internal int RefCount => Volatile.Read(ref _refs);

    /// <summary>True once the last reference has been released.</summary>
    public bool IsFreed => Volatile.Read(ref _refs) <= 0;

    /// <summary>Adds a holder.</summary>
    public void Retain()
    {
        if (Interlocked.Increment(ref _refs) <= 1)
            throw new ObjectDisposedException(nameof(DeviceBuffer), $"buffer of {Bytes} bytes ({Category}, '{Owner}') was already freed");
    }

    /// <summary>Drops a holder; the last one returns the memory to the allocator.</summary>
    public void Release()
    {
        var r = Interlocked.Decrement(ref _refs);
        if (r == 0)
        {
            Allocator.Free(this);
            Address = 0;
        }
        else if (r < 0)
        {
            throw new ObjectDisposedException(nameof(DeviceBuffer), $"buffer of {Bytes} bytes ({Category}, '{Owner}') released twice");
        }
    }

    /// <summary>Moves the buffer to another category (e.g. a tensor becoming a parameter); accounting follows.</summary>
    public void Recategorize(MemoryCategory category, string? owner = null)
    {
        var newOwner = owner ?? Owner;
        if (category == Category && newOwner == Owner)
            return;
        Allocator.Move(this, Category, category, Owner, newOwner);
        Category = category;
        Owner = newOwner;
    }
}
