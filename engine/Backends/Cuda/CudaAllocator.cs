using Frugal.Backends.Cuda.Native;
using Frugal.Memory;

namespace Frugal.Backends.Cuda;

/// <summary>GPU memory through <c>cuMemAlloc</c>, under the shared caching and per-category accounting of
/// <see cref="Allocator"/>: on out-of-memory the cache is emptied and the allocation retried, then an
/// <see cref="OutOfMemoryException"/> carries the per-category table. <c>FRUGAL_NO_MEMORY_CACHING=1</c> turns the
/// cache off (every buffer its own <c>cuMemAlloc</c> of its exact size, freed at once).</summary>
internal sealed class CudaAllocator(CudaContext context, string name) : Allocator
{
    /// <inheritdoc/>
    public override string Name { get; } = name;

    /// <inheritdoc/>
    protected override bool CachesBlocks { get; } = Environment.GetEnvironmentVariable("FRUGAL_NO_MEMORY_CACHING") != "1";

    /// <inheritdoc/>
    protected override nint RawAllocate(long bytes)
    {
        context.MakeCurrent();
        var status = Driver.MemAlloc(out var pointer, (nuint)bytes);
        if (status == Driver.ErrorOutOfMemory)
        {
            Driver.Check(Driver.MemGetInfo(out var free, out var total), "cuMemGetInfo_v2");
            throw new OutOfMemoryException($"{Name}: cuMemAlloc_v2 of {bytes} bytes failed with {free} of {total} bytes free on the device");
        }
        Driver.Check(status, "cuMemAlloc_v2");
        return pointer;
    }

    /// <inheritdoc/>
    public override long? DriverUsedBytes()
    {
        context.MakeCurrent();
        Driver.Check(Driver.MemGetInfo(out var free, out var total), "cuMemGetInfo_v2");
        return (long)(total - free);
    }

    /// <inheritdoc/>
    protected override void RawFree(nint address, long bytes)
    {
        // Blocks are freed back to the driver only from explicit calls (EmptyCache, a full cache), never from a
        // finalizer: buffers have none. Work queued on the stream may still use the block: wait for it first.
        context.MakeCurrent();
        context.Synchronize();
        Driver.Check(Driver.MemFree(address), "cuMemFree_v2");
    }
}
