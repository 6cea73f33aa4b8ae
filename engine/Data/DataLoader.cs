using Frugal.Memory;

namespace Frugal.Data;

/// <summary>Mini-batches of an image dataset as tensors: x [B, 1, H, W] (F32, normalised) and y [B] (I32 labels).
/// Shuffling is a seeded Fisher–Yates permutation per epoch. Batch tensors are owned by the enumeration: each batch
/// is disposed when the next one is drawn (or the loop ends), so a training loop needs no cleanup of its own;
/// copy a batch to keep it.</summary>
public static class DataLoader
{
    /// <summary>Enumerates the batches of one epoch.</summary>
    /// <param name="data">The dataset.</param>
    /// <param name="batchSize">Examples per batch; the last batch may be smaller unless <paramref name="dropLast"/>.</param>
    /// <param name="shuffle">Visit examples in a seeded random order.</param>
    /// <param name="seed">Seed of the order (use a different one per epoch, e.g. seed + epoch).</param>
    /// <param name="device">Where the tensors go (default CPU).</param>
    /// <param name="dropLast">Skip a final incomplete batch.</param>
    /// <param name="normalization">Pixel normalisation.</param>
    public static IEnumerable<(Tensor X, Tensor Y)> Batches(this ImageDataset data, int batchSize, bool shuffle = false, int seed = 0,
        Device? device = null, bool dropLast = false, PixelNormalization normalization = PixelNormalization.Standardize)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (batchSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(batchSize), $"Batches: batch size must be positive, got {batchSize}");
        return Enumerate(data, batchSize, shuffle ? Permutation(data.Count, seed) : [.. Enumerable.Range(0, data.Count)], device ?? Device.Cpu, dropLast, normalization);
    }

    /// <summary>A seeded random permutation of 0..n-1 (Fisher–Yates).</summary>
    public static int[] Permutation(int n, int seed)
    {
        var order = Enumerable.Range(0, n).ToArray();
        var rng = new Random(seed);
        for (var i = n - 1; i > 0; i--)
        {
            var j = rng.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    private static IEnumerable<(Tensor X, Tensor Y)> Enumerate(ImageDataset data, int batchSize, int[] order, Device device, bool dropLast, PixelNormalization normalization)
    {
        var pixels = new float[(long)batchSize * data.ImageSize];
        var labels = new int[batchSize];
        for (var start = 0; start < order.Length; start += batchSize)
        {
            var n = Math.Min(batchSize, order.Length - start);
            if (n < batchSize && dropLast)
                yield break;
            var idx = order.AsSpan(start, n);
            data.FillPixels(idx, pixels.AsSpan(0, n * data.ImageSize), normalization);
            data.FillLabels(idx, labels.AsSpan(0, n));
            var x = Tensor.FromArray<float>(pixels.AsSpan(0, n * data.ImageSize), new Shape(n, 1, data.Height, data.Width), device, MemoryCategory.Other, "data").DetachFromScope();
            var y = Tensor.FromArray<int>(labels.AsSpan(0, n), new Shape(n), device, MemoryCategory.Other, "data").DetachFromScope();
            try
            {
                yield return (x, y);
            }
            finally
            {
                x.Dispose();
                y.Dispose();
            }
        }
    }
}
