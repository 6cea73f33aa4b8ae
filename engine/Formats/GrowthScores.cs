using Frugal.Memory;

namespace Frugal.Formats;

/// <summary>
/// A request, armed by a training method before a step, for the empty entries (blocks, for BSR) of a sparse weight
/// with the largest dense-gradient magnitude (RigL's regrowth criterion; a block scores the L1 norm of its
/// gradient). The sparse op answers it during backward: it forms the dense gradient a few rows at a time in a
/// bounded Workspace buffer and keeps only the best <see cref="Count"/> candidates, so the dense gradient never
/// exists whole.
/// </summary>
public sealed class GrowthScores(int count)
{
    /// <summary>Elements of one dense-gradient chunk (rows × cols); 64K floats = 256 KiB.</summary>
    public const long ChunkElements = 1 << 16;

    /// <summary>How many candidates to keep.</summary>
    public int Count { get; } = count;

    /// <summary>The candidates, best first: flat position in the pattern's grid (row · cols + col, in blocks) and
    /// score; filled by backward.</summary>
    public IReadOnlyList<(long Flat, float Score)> Candidates { get; private set; } = [];

    /// <summary>True once backward has filled <see cref="Candidates"/>.</summary>
    public bool Filled { get; private set; }

    /// <summary>Writes rows r0 .. r0 + n of the dense gradient [rows, cols] into the chunk [n, cols] (row-major).</summary>
    internal delegate void DenseRows(int r0, int n, Tensor chunk);

    /// <summary>Computes the candidates of a [rows, cols] weight stored as <paramref name="pattern"/> of
    /// <paramref name="block"/>-sized blocks, skipping stored entries; <paramref name="denseRows"/> supplies the
    /// dense gradient a chunk of rows at a time.</summary>
    internal void Fill(CsrPattern pattern, int block, Device device, DenseRows denseRows)
    {
        int rows = pattern.Rows * block, cols = pattern.Cols * block, blockCols = pattern.Cols;
        var chunkRows = (int)Math.Clamp(ChunkElements / Math.Max(cols, 1) / block * block, block, Math.Max(rows, block));
        var best = new PriorityQueue<long, float>();   // min-heap of the best Count scores
        using var chunk = Tensor.Empty(new Shape(chunkRows, cols), DType.F32, device, MemoryCategory.Workspace, "rigl.dense_gradient");
        var scores = new float[blockCols];
        for (var r0 = 0; r0 < rows; r0 += chunkRows)
        {
            var n = Math.Min(chunkRows, rows - r0);
            denseRows(r0, n, chunk);
            var values = chunk.ToArray<float>();
            for (var i = 0; i < n; i += block)
            {
                var blockRow = (r0 + i) / block;
                Array.Clear(scores);
                for (var ii = 0; ii < block; ii++)
                {
                    for (var c = 0; c < cols; c++)
                        scores[c / block] += Math.Abs(values[(long)(i + ii) * cols + c]);
                }
                var stored = new HashSet<int>();
                for (var k = pattern.RowPtr[blockRow]; k < pattern.RowPtr[blockRow + 1]; k++)
                    stored.Add(pattern.ColIdx[k]);
                for (var c = 0; c < blockCols; c++)
                {
                    if (stored.Contains(c))
                        continue;
                    var flat = (long)blockRow * blockCols + c;
                    if (best.Count < Count)
                        best.Enqueue(flat, scores[c]);
                    else if (Count > 0 && best.TryPeek(out _, out var lowest) && scores[c] > lowest)
                        best.EnqueueDequeue(flat, scores[c]);
                }
            }
        }
        var list = new List<(long, float)>(best.Count);
        while (best.TryDequeue(out var flat, out var score))
            list.Add((flat, score));
        list.Reverse();
        Candidates = list;
        Filled = true;
    }
}
