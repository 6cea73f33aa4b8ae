using Frugal.Backends;
using Frugal.Memory;

namespace Frugal.Formats;

/// <summary>
/// A request, armed by a training method before a step, for the positions of a CSR weight's empty entries with the
/// largest dense-gradient magnitude (RigL's regrowth criterion). The sparse linear op answers it during backward:
/// it forms the dense gradient dYᵀ·X a few rows at a time in a bounded Workspace buffer and keeps only the best
/// <see cref="Count"/> candidates, so the dense gradient never exists whole.
/// </summary>
public sealed class GrowthScores(int count)
{
    /// <summary>Elements of one dense-gradient chunk (rows × cols); 64K floats = 256 KiB.</summary>
    public const long ChunkElements = 1 << 16;

    /// <summary>How many candidates to keep.</summary>
    public int Count { get; } = count;

    /// <summary>The candidates, best first: flat position (row · cols + col) and |gradient|; filled by backward.</summary>
    public IReadOnlyList<(long Flat, float Score)> Candidates { get; private set; } = [];

    /// <summary>True once backward has filled <see cref="Candidates"/>.</summary>
    public bool Filled { get; private set; }

    /// <summary>Computes the candidates from dYᵀ [rows, batch] and Xᵀ [cols, batch] (device tensors), skipping the
    /// stored positions of <paramref name="pattern"/>.</summary>
    internal void Fill(CsrPattern pattern, Tensor dyT, Tensor xT)
    {
        int rows = pattern.Rows, cols = pattern.Cols, batch = dyT.Shape[1];
        var chunkRows = (int)Math.Clamp(ChunkElements / Math.Max(cols, 1), 1, Math.Max(rows, 1));
        var best = new PriorityQueue<long, float>();   // min-heap of the best Count scores
        using var chunk = Tensor.Empty(new Shape(chunkRows, cols), DType.F32, dyT.Device, MemoryCategory.Workspace, "rigl.dense_gradient");
        for (var r0 = 0; r0 < rows; r0 += chunkRows)
        {
            var n = Math.Min(chunkRows, rows - r0);
            // chunk[0..n) = dYᵀ[r0 .. r0 + n) · X, i.e. (dYᵀ rows) × (Xᵀ)ᵀ.
            var args = new GemmArgs(false, true, 1, n, cols, batch, 1, batch, 0, batch, 0, 0, cols, 0);
            dyT.Backend.Gemm(args, DType.F32, dyT.View.Data + (nint)((long)r0 * batch * sizeof(float)), xT.View.Data, chunk.View.Data);
            var values = chunk.ToArray<float>();
            for (var i = 0; i < n; i++)
            {
                var r = r0 + i;
                var stored = new HashSet<int>();
                for (var k = pattern.RowPtr[r]; k < pattern.RowPtr[r + 1]; k++)
                    stored.Add(pattern.ColIdx[k]);
                for (var c = 0; c < cols; c++)
                {
                    if (stored.Contains(c))
                        continue;
                    var score = Math.Abs(values[(long)i * cols + c]);
                    if (best.Count < Count)
                        best.Enqueue((long)r * cols + c, score);
                    else if (Count > 0 && best.TryPeek(out _, out var lowest) && score > lowest)
                        best.EnqueueDequeue((long)r * cols + c, score);
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
