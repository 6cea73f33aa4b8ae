namespace Frugal.Backends;

/// <summary>What a kernel sees of a tensor: the address of its first element, its dtype, shape and strides
/// (in elements). No autograd, no ownership: backends read and write through it.</summary>
public readonly record struct StridedView(nint Data, DType DType, int[] Shape, int[] Strides)
{
    /// <summary>Number of elements.</summary>
    public long Numel
    {
        get
        {
            long n = 1;
            foreach (var d in Shape)
                n *= d;
            return n;
        }
    }

    /// <summary>Rank.</summary>
    public int Rank => Shape.Length;

    /// <summary>Products of the dimensions before and after <paramref name="axis"/> (the gather/scatter loops' extents).</summary>
    public (long Outer, long Inner) AroundAxis(int axis)
    {
        long outer = 1, inner = 1;
        for (var i = 0; i < axis; i++) outer *= Shape[i];
        for (var i = axis + 1; i < Rank; i++) inner *= Shape[i];
        return (outer, inner);
    }

    /// <summary>True when the elements are dense in row-major order.</summary>
    public bool IsContiguous
    {
        get
        {
            long expect = 1;
            for (var i = Shape.Length - 1; i >= 0; i--)
            {
                if (Shape[i] != 1 && Strides[i] != expect)
                    return false;
                expect *= Shape[i];
            }
            return true;
        }
    }
}
