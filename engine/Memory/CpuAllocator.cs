using System.Runtime.InteropServices;

namespace Frugal.Memory;

/// <summary>Host memory: 64-byte aligned native blocks (never the GC heap, so lifetimes are deterministic).</summary>
public sealed unsafe class CpuAllocator(string name) : Allocator
{
    /// <inheritdoc/>
    public override string Name { get; } = name;

    /// <inheritdoc/>
    protected override nint RawAllocate(long bytes)
    {
        var p = NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 64), 64);
        if (p == null)
            throw new OutOfMemoryException();
        return (nint)p;
    }

    /// <inheritdoc/>
    protected override void RawFree(nint address, long bytes) => NativeMemory.AlignedFree((void*)address);
}
