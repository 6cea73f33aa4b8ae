using System.Collections;

namespace Frugal;

/// <summary>An immutable list of dimension sizes. Row-major (C order) is the layout of contiguous tensors.</summary>
public readonly struct Shape : IEquatable<Shape>, IReadOnlyList<int>
{
    private readonly int[]? _dims;

    /// <summary>A shape with the given dimensions; each must be non-negative.</summary>
    public Shape(params int[] dims)
    {
        ArgumentNullException.ThrowIfNull(dims);
        foreach (var d in dims)
        {
            if (d < 0)
                throw new ArgumentException($"shape [{string.Join(", ", dims)}] has a negative dimension");
        }
        _dims = (int[])dims.Clone();
    }

    private Shape(int[] dims, bool _) => _dims = dims;

    internal static Shape Wrap(int[] dims) => new(dims, false);

    /// <summary>The dimensions (a copy).</summary>
    public int[] ToArray() => (int[])Dims.Clone();

    internal int[] Dims => _dims ?? [];

    /// <summary>Number of dimensions.</summary>
    public int Rank => Dims.Length;

    /// <inheritdoc/>
    public int Count => Rank;

    /// <summary>Size of dimension <paramref name="i"/>; negative counts from the end.</summary>
    public int this[int i] => Dims[Normalize(i)];

    /// <summary>Number of elements (1 for a scalar).</summary>
    public long Numel
    {
        get
        {
            long n = 1;
            foreach (var d in Dims)
                n *= d;
            return n;
        }
    }

    /// <summary>Maps a possibly negative axis to 0..Rank-1, or throws naming the shape.</summary>
    public int Normalize(int axis)
    {
        var a = axis < 0 ? axis + Rank : axis;
        if (a < 0 || a >= Rank)
            throw new ArgumentOutOfRangeException(nameof(axis), $"axis {axis} is out of range for shape {this}");
        return a;
    }

    /// <summary>Row-major strides (in elements) of a contiguous tensor of this shape.</summary>
    public int[] ContiguousStrides()
    {
        var dims = Dims;
        var s = new int[dims.Length];
        long acc = 1;
        for (var i = dims.Length - 1; i >= 0; i--)
        {
            s[i] = (int)acc;
            acc *= Math.Max(dims[i], 1);
        }
        return s;
    }

    /// <summary>The shape both operands broadcast to (NumPy rules), or an exception naming both and the op.</summary>
    public static Shape Broadcast(Shape a, Shape b, string op)
    {
        var rank = Math.Max(a.Rank, b.Rank);
        var r = new int[rank];
        for (var i = 0; i < rank; i++)
        {
            var da = i < rank - a.Rank ? 1 : a.Dims[i - (rank - a.Rank)];
            var db = i < rank - b.Rank ? 1 : b.Dims[i - (rank - b.Rank)];
            if (da != db && da != 1 && db != 1)
                throw new ShapeMismatchException($"{op}: shapes {a} and {b} cannot be broadcast together (dimension {i}: {da} vs {db})");
            r[i] = da == 1 ? db : da;
        }
        return Wrap(r);
    }

    /// <inheritdoc/>
    public bool Equals(Shape other) => Dims.AsSpan().SequenceEqual(other.Dims);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var d in Dims)
            h.Add(d);
        return h.ToHashCode();
    }

    /// <summary>Equality of dimensions.</summary>
    public static bool operator ==(Shape a, Shape b) => a.Equals(b);

    /// <summary>Inequality of dimensions.</summary>
    public static bool operator !=(Shape a, Shape b) => !a.Equals(b);

    /// <summary>Shape from dimensions.</summary>
    public static implicit operator Shape(int[] dims) => new(dims);

    /// <inheritdoc/>
    public override string ToString() => "[" + string.Join(", ", Dims) + "]";

    /// <inheritdoc/>
    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)Dims).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>Operands whose shapes do not fit the operation; the message names the op and the shapes.</summary>
public sealed class ShapeMismatchException : ArgumentException
{
    /// <summary>Creates the exception with a message naming op and shapes.</summary>
    public ShapeMismatchException(string message) : base(message) { }
}
