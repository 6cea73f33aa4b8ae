using System.Runtime.InteropServices;
using Frugal.Backends;
using Frugal.Formats;
using Frugal.Memory;

namespace Frugal;

/// <summary>A logical n-d array on a device: shape, dtype, format, optional gradient. A dense tensor is a strided
/// view over one reference-counted <see cref="DeviceBuffer"/>. Tensors are <see cref="IDisposable"/>: memory is
/// returned when the last tensor (or autograd's saved reference) over a buffer is disposed, never by the GC.
/// Inside a <see cref="TensorScope"/> every new tensor is disposed with the scope unless kept.</summary>
public sealed partial class Tensor : IDisposable
{
    private static long s_live;

    private static long s_peakLive;

    private DeviceBuffer _buffer;
    private long _offset;
    private int[] _strides;
    private bool _disposed;
    private Tensor? _grad;

    internal Tensor(DeviceBuffer buffer, long offset, Shape shape, int[] strides, DType dtype, Device device)
    {
        _buffer = buffer;
        _offset = offset;
        Shape = shape;
        _strides = strides;
        DType = dtype;
        Device = device;
        var live = Interlocked.Increment(ref s_live);
        long peak;
        while (live > (peak = Interlocked.Read(ref s_peakLive)) && Interlocked.CompareExchange(ref s_peakLive, live, peak) != peak)
        {
        }
        TensorScope.Register(this);
    }

    /// <summary>Tensors created and not yet disposed, in this process.</summary>
    public static long LiveCount => Interlocked.Read(ref s_live);

    /// <summary>Largest <see cref="LiveCount"/> seen since start or <see cref="ResetPeakLiveCount"/>.</summary>
    public static long PeakLiveCount => Interlocked.Read(ref s_peakLive);

    /// <summary>Sets the peak live count to the current count.</summary>
    public static void ResetPeakLiveCount() => Interlocked.Exchange(ref s_peakLive, LiveCount);

    /// <summary>Dimensions.</summary>
    public Shape Shape { get; }

    /// <summary>Strides in elements (a copy).</summary>
    public int[] Strides => (int[])_strides.Clone();

    /// <summary>Element type.</summary>
    public DType DType { get; }

    /// <summary>Where it lives (a parameter or buffer may move with <see cref="Nn.Module.To"/>).</summary>
    public Device Device { get; private set; }

    /// <summary>Optional name (parameters carry their module path).</summary>
    public string? Name { get; set; }

    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Rank;

    /// <summary>Number of elements.</summary>
    public long Numel => Shape.Numel;

    /// <summary>The buffer behind this tensor (shared by its views).</summary>
    public DeviceBuffer Buffer
    {
        get
        {
            ThrowIfDisposed();
            return _buffer;
        }
    }

    internal long Offset => _offset;

    internal int[] RawStrides => _strides;

    /// <summary>True once disposed; any further use throws <see cref="ObjectDisposedException"/>.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>Whether autograd tracks operations on this tensor.</summary>
    public bool RequiresGrad { get; set; }

    /// <summary>The autograd node that produced this tensor (null for leaves).</summary>
    internal GradNode? GradFn { get; set; }

    /// <summary>Which output of <see cref="GradFn"/> this tensor is (0 but for ops with several outputs).</summary>
    internal int GradSlot { get; set; }

    /// <summary>True when no recorded op produced it (user tensors, parameters).</summary>
    public bool IsLeaf => GradFn is null;

    /// <summary>Accumulated gradient of a leaf after <see cref="Backward()"/>; owned by this tensor.</summary>
    public Tensor? Grad
    {
        get => _grad;
        set
        {
            if (ReferenceEquals(_grad, value))
                return;
            if (value is not null && value.Shape != GradShape)
                throw new ShapeMismatchException($"Grad: gradient shape {value.Shape} does not match tensor shape {GradShape}");
            _grad?.Dispose();
            value?.DetachFromScope();
            _grad = value;
        }
    }

    /// <summary>For the packed codes of a master-free quantized weight: the weight it packs; null otherwise.</summary>
    internal Formats.PackedWeight? Packing { get; set; }

    /// <summary>True for the trained parts of a layer weight in any format (a sparse weight's values, low-rank
    /// factors, codes), which are matrices whatever their tensor rank.</summary>
    internal bool OfWeight { get; set; }

    /// <summary>The shape a gradient of this tensor has: its own, or the logical weight's for packed codes.</summary>
    internal Shape GradShape => Packing?.LogicalShape ?? Shape;

    /// <summary>Removes and returns the gradient without disposing it (the caller owns it).</summary>
    internal Tensor? TakeGrad()
    {
        var g = _grad;
        _grad = null;
        return g;
    }

    /// <summary>The scope that will dispose this tensor, if any.</summary>
    internal TensorScope? Scope { get; set; }

    /// <summary>True when elements are dense in row-major order starting at the view's offset.</summary>
    public bool IsContiguous => View.IsContiguous;

    /// <summary>The kernel-level view.</summary>
    public StridedView View
    {
        get
        {
            ThrowIfDisposed();
            return new StridedView(_buffer.Address + (nint)(_offset * DType.SizeOf()), DType, Shape.Dims, _strides);
        }
    }

    internal IBackend Backend => Device.Backend;

    /// <summary>Throws when disposed, naming the tensor.</summary>
    public void ThrowIfDisposed()
    {
        if (_disposed)
            throw new ObjectDisposedException(nameof(Tensor), $"tensor {Describe()} was used after it was disposed");
    }

    /// <summary>"name [2, 3] f32 cpu" for messages.</summary>
    public string Describe() => $"{(Name is null ? "" : Name + " ")}{Shape} {DType.Name()} {Device.Name}";

    /// <inheritdoc/>
    public override string ToString() => $"Tensor({Describe()}{(RequiresGrad ? ", requires_grad" : "")})";

    /// <summary>Releases the buffer reference, the gradient and the autograd node. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        Interlocked.Decrement(ref s_live);
        if (Scope is not null)
            Scope = null;
        _grad?.Dispose();
        _grad = null;
        GradFn?.Release();
        GradFn = null;
        _buffer.Release();
    }

    /// <summary>Moves every tensor of <paramref name="tensors"/> (leaves: parameters, buffers, optimizer states) and
    /// its gradient to <paramref name="device"/> in place, all or none: each is first copied there (contiguous, with
    /// its buffer's category and owner), and only when every copy exists does each tensor take its copy's storage and
    /// release its old one. The tensor objects stay, so whatever holds them (a layer, an optimizer) sees them moved.
    /// Views taken before keep the old storage.</summary>
    /// <exception cref="InvalidOperationException">A tensor is the result of an op (not a leaf), or two of them share
    /// a buffer; nothing moved.</exception>
    /// <exception cref="OutOfMemoryException">The device cannot hold them all; nothing moved.</exception>
    internal static void MoveAll(IEnumerable<Tensor> tensors, Device device, string what)
    {
        var all = new List<Tensor>();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        var buffers = new Dictionary<DeviceBuffer, Tensor>(ReferenceEqualityComparer.Instance);
        void Add(Tensor t)
        {
            if (ReferenceEquals(t.Device, device) || !seen.Add(t))
                return;
            // Copied one by one, two views of one buffer would come out as two buffers.
            if (!buffers.TryAdd(t._buffer, t))
                throw new InvalidOperationException($"{what}: {t.Name ?? t.Describe()} and {buffers[t._buffer].Name ?? buffers[t._buffer].Describe()} share one buffer; moving them in place would part them");
            all.Add(t);
        }
        foreach (var t in tensors)
        {
            t.ThrowIfDisposed();
            if (!t.IsLeaf)
                throw new InvalidOperationException($"{what}: {t.Describe()} is the result of an op; only leaves move in place");
            Add(t);
            if (t._grad is { } g)
                Add(g);
        }
        var copies = new List<Tensor>(all.Count);
        try
        {
            foreach (var t in all)
                copies.Add(t.ToDevice(device).DetachFromScope());
        }
        catch
        {
            foreach (var c in copies)
                c.Dispose();
            throw;
        }
        for (var i = 0; i < all.Count; i++)
        {
            var (t, c) = (all[i], copies[i]);
            c._buffer.Retain();
            t._buffer.Release();
            (t._buffer, t._offset, t._strides, t.Device) = (c._buffer, c._offset, c._strides, c.Device);
            c.Dispose();
        }
    }

    /// <summary>Removes the tensor from its scope: the caller now owns it.</summary>
    public Tensor DetachFromScope()
    {
        Scope = null;
        return this;
    }

    /// <summary>Moves the tensor to the scope enclosing its current one (or out of all scopes).</summary>
    public Tensor MoveToOuter()
    {
        var outer = Scope?.Parent;
        Scope = null;
        outer?.Adopt(this);
        return this;
    }

    // ---- creation ----

    /// <summary>A new contiguous tensor with uninitialised memory (ops use it for results).</summary>
    public static Tensor Empty(Shape shape, DType dtype = DType.F32, Device? device = null, MemoryCategory? category = null, string? owner = null)
    {
        device ??= Device.Cpu;
        var bytes = shape.Numel * dtype.SizeOf();
        var buffer = device.Allocator.Allocate(bytes, category ?? MemoryContext.Category, owner ?? MemoryContext.Owner);
        return new Tensor(buffer, 0, shape, shape.ContiguousStrides(), dtype, device);
    }

    /// <summary>A tensor filled with <paramref name="value"/>.</summary>
    public static Tensor Full(Shape shape, double value, DType dtype = DType.F32, Device? device = null, MemoryCategory? category = null, string? owner = null)
    {
        var t = Empty(shape, dtype, device, category ?? MemoryContext.CreationCategory, owner);
        t.Backend.Fill(t.View, value);
        return t;
    }

    /// <summary>Zeros.</summary>
    public static Tensor Zeros(Shape shape, DType dtype = DType.F32, Device? device = null, MemoryCategory? category = null, string? owner = null)
        => Full(shape, 0, dtype, device, category, owner);

    /// <summary>Ones.</summary>
    public static Tensor Ones(Shape shape, DType dtype = DType.F32, Device? device = null, MemoryCategory? category = null, string? owner = null)
        => Full(shape, 1, dtype, device, category, owner);

    /// <summary>A 0-d tensor.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.F32, Device? device = null) => Full(new Shape(), value, dtype, device);

    /// <summary>A tensor holding a copy of <paramref name="data"/> (row-major) with the given shape.</summary>
    public static Tensor FromArray<T>(ReadOnlySpan<T> data, Shape shape, Device? device = null, MemoryCategory? category = null, string? owner = null)
        where T : unmanaged
    {
        var dtype = DTypeOf<T>();
        if (data.Length != shape.Numel)
            throw new ShapeMismatchException($"FromArray: {data.Length} {dtype.Name()} values do not fill shape {shape} ({shape.Numel} elements)");
        var t = Empty(shape, dtype, device, category ?? MemoryContext.CreationCategory, owner);
        t.Backend.Upload(MemoryMarshal.AsBytes(data), t.Buffer.Address);
        return t;
    }

    /// <summary>A tensor holding a copy of <paramref name="data"/> (row-major) with the given shape.</summary>
    public static Tensor FromArray<T>(T[] data, params int[] shape) where T : unmanaged => FromArray<T>(data.AsSpan(), new Shape(shape));

    /// <summary>Uniform [low, high) values from the counter-based generator.</summary>
    public static Tensor Uniform(Shape shape, double low, double high, ulong seed, DType dtype = DType.F32, Device? device = null, MemoryCategory? category = null, string? owner = null)
    {
        var t = Empty(shape, dtype, device, category ?? MemoryContext.CreationCategory, owner);
        t.Backend.Random(t.View, RandomKind.Uniform, low, high, seed, 0);
        return t;
    }

    /// <summary>Normal(mean, std) values from the counter-based generator.</summary>
    public static Tensor Normal(Shape shape, double mean, double std, ulong seed, DType dtype = DType.F32, Device? device = null, MemoryCategory? category = null, string? owner = null)
    {
        var t = Empty(shape, dtype, device, category ?? MemoryContext.CreationCategory, owner);
        t.Backend.Random(t.View, RandomKind.Normal, mean, std, seed, 0);
        return t;
    }

    /// <summary>The <see cref="DType"/> of a .NET element type.</summary>
    public static DType DTypeOf<T>() where T : unmanaged => DTypes.Of<T>();

    // ---- reading back ----

    /// <summary>Copies the elements (row-major) to a new array; <typeparamref name="T"/> must match the dtype.</summary>
    public T[] ToArray<T>() where T : unmanaged
    {
        ThrowIfDisposed();
        if (DTypeOf<T>() != DType)
            throw new ArgumentException($"ToArray<{typeof(T).Name}>: tensor {Describe()} holds {DType.Name()}");
        var result = new T[Numel];
        using var c = Contiguous();
        Backend.Download(c.View.Data, MemoryMarshal.AsBytes(result.AsSpan()));
        return result;
    }

    /// <summary>The single element of a one-element tensor, as double.</summary>
    public double Item()
    {
        ThrowIfDisposed();
        if (Numel != 1)
            throw new ShapeMismatchException($"Item: tensor {Describe()} has {Numel} elements, not 1");
        using var f = DType == DType.F64 ? Alias() : To(DType.F64);
        return f.ToArray<double>()[0];
    }

    /// <summary>A new tensor over the same buffer and layout (no autograd history); autograd saves tensors this way.</summary>
    internal Tensor Alias() => AsStrided(Shape, _strides, _offset);

    /// <summary>A tensor over the same buffer with another layout (shares memory; no autograd recording).</summary>
    internal Tensor AsStrided(Shape shape, int[] strides, long offset)
    {
        ThrowIfDisposed();
        _buffer.Retain();
        return new Tensor(_buffer, offset, shape, strides, DType, Device);
    }
}
