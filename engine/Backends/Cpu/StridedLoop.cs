namespace Frugal.Backends.Cpu;

/// <summary>Iterates a shape over up to three strided operands row by row: dimensions that are laid out
/// contiguously for every operand are merged first, then each "row" (the last merged dimension) is handed to a
/// row kernel with the element offsets of each operand. Rows are spread over threads when the work is large.</summary>
internal static class StridedLoop
{
    /// <summary>Threshold of elements below which a loop stays on the calling thread.</summary>
    public const long ParallelThreshold = 1 << 15;

    /// <summary>Merged dims and per-operand strides.</summary>
    public readonly record struct Plan(int[] Shape, int[][] Strides)
    {
        public int Rank => Shape.Length;

        public long Rows
        {
            get
            {
                long r = 1;
                for (var i = 0; i < Shape.Length - 1; i++)
                    r *= Shape[i];
                return r;
            }
        }

        public int RowLength => Shape.Length == 0 ? 1 : Shape[^1];

        /// <summary>A walk over consecutive rows from <paramref name="row"/>: every operand's element offset.</summary>
        public RowCursor Start(long row) => new(this, row);
    }

    /// <summary>Element offsets of every operand of a <see cref="Plan"/> for one row, then the next: the row's
    /// index in each merged dim is divided out once, then carried (an odometer), not divided per row.</summary>
    public sealed class RowCursor
    {
        private readonly Plan _plan;
        private readonly int[] _index;
        private readonly long[] _offsets;

        public RowCursor(Plan plan, long row)
        {
            _plan = plan;
            _index = new int[Math.Max(plan.Rank - 1, 0)];
            _offsets = new long[plan.Strides.Length];
            for (var d = plan.Rank - 2; d >= 0; d--)
            {
                _index[d] = (int)(row % plan.Shape[d]);
                row /= plan.Shape[d];
                for (var op = 0; op < _offsets.Length; op++)
                    _offsets[op] += (long)_index[d] * plan.Strides[op][d];
            }
        }

        /// <summary>Operand <paramref name="op"/>'s element offset for the current row.</summary>
        public long this[int op] => _offsets[op];

        /// <summary>Moves to the next row.</summary>
        public void Next()
        {
            for (var d = _plan.Rank - 2; d >= 0; d--)
            {
                for (var op = 0; op < _offsets.Length; op++)
                    _offsets[op] += _plan.Strides[op][d];
                if (++_index[d] < _plan.Shape[d])
                    return;
                for (var op = 0; op < _offsets.Length; op++)
                    _offsets[op] -= (long)_plan.Strides[op][d] * _plan.Shape[d];
                _index[d] = 0;
            }
        }
    }

    /// <summary>Drops unit dims and merges dims contiguous for all operands.</summary>
    public static Plan Coalesce(int[] shape, params int[][] strides)
    {
        var dims = new List<int>();
        var st = strides.Select(_ => new List<int>()).ToArray();
        for (var i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 1)
                continue;
            if (dims.Count > 0)
            {
                var last = dims.Count - 1;
                var merge = true;
                for (var o = 0; o < strides.Length; o++)
                {
                    if (st[o][last] != strides[o][i] * shape[i])
                    {
                        merge = false;
                        break;
                    }
                }
                if (merge)
                {
                    dims[last] *= shape[i];
                    for (var o = 0; o < strides.Length; o++)
                        st[o][last] = strides[o][i];
                    continue;
                }
            }
            dims.Add(shape[i]);
            for (var o = 0; o < strides.Length; o++)
                st[o].Add(strides[o][i]);
        }
        if (dims.Count == 0)
        {
            dims.Add(shape.Any(d => d == 0) ? 0 : 1);
            foreach (var s in st)
                s.Add(1);
        }
        return new Plan([.. dims], [.. st.Select(s => s.ToArray())]);
    }

    /// <summary>Runs <paramref name="body"/>(firstRow, endRow) over row blocks, in parallel when there are at least
    /// <paramref name="threshold"/> elements (by default <see cref="ParallelThreshold"/>, for a few nanoseconds an
    /// element; costlier elements pay for threads sooner).</summary>
    public static void ForRows(long rows, long rowLength, Action<long, long> body, long threshold = ParallelThreshold)
    {
        var total = rows * rowLength;
        if (total < threshold || rows < 2)
        {
            body(0, rows);
            return;
        }
        var blocks = (int)Math.Min(rows, CpuThreads.Count * 4L);
        CpuThreads.For(blocks, b => body(rows * b / blocks, rows * (b + 1) / blocks));
    }
}
