using Frugal.Memory;

namespace Frugal.Backends;

/// <summary>The chunk loop the CUDA backend convolves with (the CPU works one image at a time instead, see
/// <c>CpuBackend.Conv.cs</c>): images are taken a few at a time so that the im2col columns fit a budget, with two
/// Workspace buffers reused by every chunk: the columns [C·KH·KW, b·OH·OW] and a per-output-channel buffer
/// [OutC, b·OH·OW].</summary>
internal static class ConvChunks
{
    /// <summary>One chunk: images n0 .. n0 + images, and the addresses of the two buffers.</summary>
    public delegate void Body(int n0, int images, nint columns, nint perChannel);

    public static void Run(Allocator allocator, in Conv2dArgs a, int elementSize, long budgetElements, string second, Body body)
    {
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW, chunk = a.ImagesPerChunk(budgetElements);
        var cols = allocator.Allocate((long)ckk * chunk * ohw * elementSize, MemoryCategory.Workspace, "conv2d.columns");
        var other = allocator.Allocate((long)a.OutC * chunk * ohw * elementSize, MemoryCategory.Workspace, second);
        try
        {
            for (var n0 = 0; n0 < a.N; n0 += chunk)
                body(n0, Math.Min(chunk, a.N - n0), cols.Address, other.Address);
        }
        finally
        {
            cols.Release();
            other.Release();
        }
    }
}
