namespace Frugal.Backends;

/// <summary>Extents of a CUDA grid or block along x, y and z (CUDA's <c>dim3</c>); an int converts to (x, 1, 1).</summary>
public readonly record struct Dim3
{
    /// <summary>Extents (x, y, z); y and z default to 1.</summary>
    public Dim3(int x, int y = 1, int z = 1) => (X, Y, Z) = (x, y, z);

    /// <summary>Extent along x.</summary>
    public int X { get; }

    /// <summary>Extent along y.</summary>
    public int Y { get; }

    /// <summary>Extent along z.</summary>
    public int Z { get; }

    /// <summary>X·Y·Z: blocks of a grid, threads of a block.</summary>
    public long Count => (long)X * Y * Z;

    /// <summary>(x, 1, 1).</summary>
    public static implicit operator Dim3(int x) => new(x);

    /// <summary>"(x, y, z)" for messages.</summary>
    public override string ToString() => $"({X}, {Y}, {Z})";
}

/// <summary>How a kernel is launched: the grid of blocks, the threads of a block and the bytes of dynamic shared
/// memory each block gets (<c>extern __shared__</c>). A grid with a zero extent launches nothing.</summary>
public readonly record struct LaunchConfig
{
    /// <summary>Threads one block may have (every CUDA architecture Frugal supports).</summary>
    public const int MaxThreadsPerBlock = 1024;

    /// <summary>Bytes of dynamic shared memory a block may use without opting in to more (48 KiB).</summary>
    public const int MaxSharedBytes = 48 * 1024;

    /// <summary>A block's largest extent per axis.</summary>
    public static Dim3 MaxBlock => new(1024, 1024, 64);

    /// <summary>A grid's largest extent per axis.</summary>
    public static Dim3 MaxGrid => new(int.MaxValue, 65535, 65535);

    /// <summary>A launch of <paramref name="grid"/> blocks of <paramref name="block"/> threads with
    /// <paramref name="sharedBytes"/> bytes of dynamic shared memory per block.</summary>
    public LaunchConfig(Dim3 grid, Dim3 block, int sharedBytes = 0) => (Grid, Block, SharedBytes) = (grid, block, sharedBytes);

    /// <summary>Blocks along x, y, z.</summary>
    public Dim3 Grid { get; }

    /// <summary>Threads of a block along x, y, z.</summary>
    public Dim3 Block { get; }

    /// <summary>Dynamic shared memory per block, in bytes.</summary>
    public int SharedBytes { get; }

    /// <summary>"grid (g), block (b), s bytes of shared memory" for messages.</summary>
    public override string ToString() => $"grid {Grid}, block {Block}, {SharedBytes} bytes of shared memory";

    /// <summary>Why CUDA would refuse this launch, or null when it would not.</summary>
    internal string? Refusal()
    {
        Dim3 maxBlock = MaxBlock, maxGrid = MaxGrid;
        if (Block.X < 1 || Block.Y < 1 || Block.Z < 1)
            return $"block {Block} has an extent below 1";
        if (Block.X > maxBlock.X || Block.Y > maxBlock.Y || Block.Z > maxBlock.Z)
            return $"block {Block} exceeds CUDA's largest block {maxBlock}";
        if (Block.Count > MaxThreadsPerBlock)
            return $"block {Block} has {Block.Count} threads, more than the {MaxThreadsPerBlock} a block may have";
        if (Grid.X < 0 || Grid.Y < 0 || Grid.Z < 0)
            return $"grid {Grid} has a negative extent";
        if (Grid.Y > maxGrid.Y || Grid.Z > maxGrid.Z)
            return $"grid {Grid} exceeds CUDA's largest grid {maxGrid}";
        if (SharedBytes is < 0 or > MaxSharedBytes)
            return $"{SharedBytes} bytes of dynamic shared memory per block are outside [0, {MaxSharedBytes}] (48 KiB)";
        return null;
    }
}

/// <summary>The C type of a scalar kernel argument.</summary>
public enum CustomScalarType
{
    /// <summary><c>int</c>.</summary>
    I32,
    /// <summary><c>long long</c>.</summary>
    I64,
    /// <summary><c>float</c>.</summary>
    F32,
    /// <summary><c>double</c>.</summary>
    F64,
}

/// <summary>A scalar argument of a custom kernel, passed by value after the pointers: an int, long, float or double
/// (each converts implicitly, keeping its C type: <c>int</c>, <c>long long</c>, <c>float</c>, <c>double</c>).</summary>
public readonly record struct CustomScalar
{
    private readonly long _bits;

    private CustomScalar(CustomScalarType type, long bits)
    {
        Type = type;
        _bits = bits;
    }

    /// <summary>The C type it is passed as.</summary>
    public CustomScalarType Type { get; }

    /// <summary>Bytes it takes in the kernel's parameters (and its alignment there).</summary>
    public int Size => Type is CustomScalarType.I32 or CustomScalarType.F32 ? 4 : 8;

    /// <summary>An <c>int</c> argument.</summary>
    public static implicit operator CustomScalar(int value) => new(CustomScalarType.I32, value);

    /// <summary>A <c>long long</c> argument.</summary>
    public static implicit operator CustomScalar(long value) => new(CustomScalarType.I64, value);

    /// <summary>A <c>float</c> argument.</summary>
    public static implicit operator CustomScalar(float value) => new(CustomScalarType.F32, BitConverter.SingleToInt32Bits(value));

    /// <summary>A <c>double</c> argument.</summary>
    public static implicit operator CustomScalar(double value) => new(CustomScalarType.F64, BitConverter.DoubleToInt64Bits(value));

    /// <summary>The value of an <see cref="CustomScalarType.I32"/> scalar.</summary>
    /// <exception cref="InvalidOperationException">It has another type.</exception>
    public int AsInt32() => (int)Bits(CustomScalarType.I32);

    /// <summary>The value of an <see cref="CustomScalarType.I64"/> scalar.</summary>
    /// <exception cref="InvalidOperationException">It has another type.</exception>
    public long AsInt64() => Bits(CustomScalarType.I64);

    /// <summary>The value of an <see cref="CustomScalarType.F32"/> scalar.</summary>
    /// <exception cref="InvalidOperationException">It has another type.</exception>
    public float AsSingle() => BitConverter.Int32BitsToSingle((int)Bits(CustomScalarType.F32));

    /// <summary>The value of an <see cref="CustomScalarType.F64"/> scalar.</summary>
    /// <exception cref="InvalidOperationException">It has another type.</exception>
    public double AsDouble() => BitConverter.Int64BitsToDouble(Bits(CustomScalarType.F64));

    /// <summary>"i32 5", "f32 1E-05" for messages.</summary>
    public override string ToString()
    {
        var value = Type switch
        {
            CustomScalarType.I32 => AsInt32().ToString(System.Globalization.CultureInfo.InvariantCulture),
            CustomScalarType.I64 => AsInt64().ToString(System.Globalization.CultureInfo.InvariantCulture),
            CustomScalarType.F32 => AsSingle().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            _ => AsDouble().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        };
        return $"{Type.ToString().ToLowerInvariant()} {value}";
    }

    private long Bits(CustomScalarType type)
        => Type == type ? _bits : throw new InvalidOperationException($"custom kernel scalar {this} is {Type.ToString().ToLowerInvariant()}, not {type.ToString().ToLowerInvariant()}");
}
