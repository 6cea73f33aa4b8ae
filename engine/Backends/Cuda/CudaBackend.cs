using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

/// <summary>The CUDA kernel table, in progress: memory (upload, download, strided copy, fill) and the elementwise
/// kernels (unary with derivatives, binary, comparisons, where) of <c>kernels/elementwise.cu</c> run on the GPU;
/// the other entries throw <see cref="NotSupportedException"/> naming the op until their kernels land. Every
/// operation is queued on the device's stream; <see cref="Download"/> synchronises.</summary>
internal sealed unsafe class CudaBackend(CudaContext context) : IBackend
{
    private const string Elementwise = "elementwise.cu";

    /// <inheritdoc/>
    public string Name => $"cuda:{context.Ordinal}";

    // ---- memory ----

    /// <inheritdoc/>
    public void Upload(ReadOnlySpan<byte> src, nint dst)
    {
        context.MakeCurrent();
        fixed (byte* p = src)
            Driver.Check(Driver.MemcpyHtoDAsync(dst, p, (nuint)src.Length, context.Stream), "cuMemcpyHtoDAsync_v2");
        // A pageable source is staged before the call returns, but the caller's span may die now: wait.
        context.Synchronize();
    }

    /// <inheritdoc/>
    public void Download(nint src, Span<byte> dst)
    {
        context.MakeCurrent();
        fixed (byte* p = dst)
            Driver.Check(Driver.MemcpyDtoHAsync(p, src, (nuint)dst.Length, context.Stream), "cuMemcpyDtoHAsync_v2");
        context.Synchronize();
    }

    /// <inheritdoc/>
    public void Copy(StridedView src, StridedView dst)
    {
        var suffix = BitsSuffix(src.DType);
        Run($"copy_strided_{suffix}", dst.Numel, (ref KernelArgs a) =>
        {
            a.Add(src.Data);
            a.Add(KernelAbi.Strided.From(src, "copy source"));
            a.Add(dst.Data);
            a.Add(KernelAbi.Strided.From(dst, "copy destination"));
            a.Add(dst.Numel);
        });
    }

    /// <inheritdoc/>
    public void Fill(StridedView dst, double value)
    {
        var bits = Bits(dst.DType, value);
        var suffix = BitsSuffix(dst.DType);
        Run($"fill_{suffix}", dst.Numel, (ref KernelArgs a) =>
        {
            a.Add(dst.Data);
            a.Add(KernelAbi.Strided.From(dst, "fill destination"));
            switch (dst.DType.SizeOf())
            {
                case 1: a.Add((byte)bits); break;
                case 2: a.Add((ushort)bits); break;
                case 4: a.Add((uint)bits); break;
                default: a.Add(bits); break;
            }
            a.Add(dst.Numel);
        });
    }

    // ---- elementwise ----

    /// <inheritdoc/>
    public void Unary(UnaryOp op, StridedView x, StridedView y, double alpha)
        => Run($"unary_{FloatSuffix("Unary", x.DType)}", y.Numel, (ref KernelArgs a) =>
        {
            a.Add((int)op);
            a.Add(x.Data);
            a.Add(KernelAbi.Strided.From(x, "x"));
            a.Add(y.Data);
            AddScalar(ref a, x.DType, alpha);
            a.Add(y.Numel);
        });

    /// <inheritdoc/>
    public void UnaryBackward(UnaryOp op, StridedView x, StridedView y, StridedView dy, StridedView dx, double alpha)
        => Run($"unary_backward_{FloatSuffix("UnaryBackward", dy.DType)}", dx.Numel, (ref KernelArgs a) =>
        {
            a.Add((int)op);
            a.Add(x.Data);
            a.Add(y.Data);
            a.Add(dy.Data);
            a.Add(dx.Data);
            AddScalar(ref a, dy.DType, alpha);
            a.Add(dx.Numel);
        });

    /// <inheritdoc/>
    public void Binary(BinaryOp op, StridedView a, StridedView b, StridedView y)
        => Run($"{(op.IsComparison() ? "compare" : "binary")}_{FloatSuffix("Binary", a.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add((int)op);
            k.Add(a.Data);
            k.Add(KernelAbi.Strided.From(a, "a"));
            k.Add(b.Data);
            k.Add(KernelAbi.Strided.From(b, "b"));
            k.Add(y.Data);
            k.Add(y.Numel);
        });

    /// <inheritdoc/>
    public void Where(StridedView cond, StridedView a, StridedView b, StridedView y)
        => Run($"where_{FloatSuffix("Where", a.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(cond.Data);
            k.Add(KernelAbi.Strided.From(cond, "cond"));
            k.Add(a.Data);
            k.Add(KernelAbi.Strided.From(a, "a"));
            k.Add(b.Data);
            k.Add(KernelAbi.Strided.From(b, "b"));
            k.Add(y.Data);
            k.Add(y.Numel);
        });

    // ---- not yet on the GPU ----

    /// <inheritdoc/>
    public void Cast(StridedView src, StridedView dst) => throw NotYet(nameof(Cast));

    /// <inheritdoc/>
    public void Reduce(ReduceOp op, StridedView x, int[] axes, StridedView y) => throw NotYet(nameof(Reduce));

    /// <inheritdoc/>
    public void ArgMax(StridedView x, int axis, StridedView y) => throw NotYet(nameof(ArgMax));

    /// <inheritdoc/>
    public void Gemm(in GemmArgs args, DType dtype, nint a, nint b, nint c) => throw NotYet(nameof(Gemm));

    /// <inheritdoc/>
    public void Softmax(StridedView x, StridedView y, bool log) => throw NotYet(nameof(Softmax));

    /// <inheritdoc/>
    public void SoftmaxBackward(StridedView y, StridedView dy, StridedView dx, bool log) => throw NotYet(nameof(SoftmaxBackward));

    /// <inheritdoc/>
    public void CrossEntropy(StridedView logits, StridedView targets, StridedView loss, int ignoreIndex) => throw NotYet(nameof(CrossEntropy));

    /// <inheritdoc/>
    public void CrossEntropyBackward(StridedView logits, StridedView targets, StridedView dloss, StridedView dlogits, int ignoreIndex)
        => throw NotYet(nameof(CrossEntropyBackward));

    /// <inheritdoc/>
    public void LayerNorm(StridedView x, StridedView gamma, StridedView beta, double eps, StridedView y, StridedView mean, StridedView rstd)
        => throw NotYet(nameof(LayerNorm));

    /// <inheritdoc/>
    public void LayerNormBackward(StridedView x, StridedView gamma, StridedView mean, StridedView rstd, StridedView dy, StridedView dx, StridedView dgamma, StridedView dbeta)
        => throw NotYet(nameof(LayerNormBackward));

    /// <inheritdoc/>
    public void IndexSelect(StridedView src, int axis, StridedView index, StridedView dst) => throw NotYet(nameof(IndexSelect));

    /// <inheritdoc/>
    public void IndexAdd(StridedView src, int axis, StridedView index, StridedView dst) => throw NotYet(nameof(IndexAdd));

    /// <inheritdoc/>
    public void Conv2d(in Conv2dArgs args, StridedView x, StridedView w, StridedView bias, StridedView y) => throw NotYet(nameof(Conv2d));

    /// <inheritdoc/>
    public void Conv2dBackwardInput(in Conv2dArgs args, StridedView dy, StridedView w, StridedView dx) => throw NotYet(nameof(Conv2dBackwardInput));

    /// <inheritdoc/>
    public void Conv2dBackwardWeight(in Conv2dArgs args, StridedView x, StridedView dy, StridedView dw, StridedView dbias)
        => throw NotYet(nameof(Conv2dBackwardWeight));

    /// <inheritdoc/>
    public void MaxPool2d(in Pool2dArgs args, StridedView x, StridedView y, StridedView argmax) => throw NotYet(nameof(MaxPool2d));

    /// <inheritdoc/>
    public void MaxPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView argmax, StridedView dx) => throw NotYet(nameof(MaxPool2dBackward));

    /// <inheritdoc/>
    public void AvgPool2d(in Pool2dArgs args, StridedView x, StridedView y) => throw NotYet(nameof(AvgPool2d));

    /// <inheritdoc/>
    public void AvgPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView dx) => throw NotYet(nameof(AvgPool2dBackward));

    /// <inheritdoc/>
    public void Dropout(StridedView x, double p, ulong seed, ulong offset, StridedView y, StridedView mask) => throw NotYet(nameof(Dropout));

    /// <inheritdoc/>
    public void Random(StridedView dst, RandomKind kind, double a, double b, ulong seed, ulong offset) => throw NotYet(nameof(Random));

    /// <inheritdoc/>
    public void SgdStep(StridedView param, StridedView grad, StridedView momentum, in SgdArgs args) => throw NotYet(nameof(SgdStep));

    /// <inheritdoc/>
    public void AdamStep(StridedView param, StridedView grad, StridedView m, StridedView v, in AdamArgs args) => throw NotYet(nameof(AdamStep));

    // ---- helpers ----

    private delegate void ArgWriter(ref KernelArgs args);

    private void Run(string entry, long elements, ArgWriter write)
    {
        if (elements == 0)
            return;
        context.MakeCurrent();
        var function = context.Function(Elementwise, entry);
        var storage = stackalloc byte[1024];
        var pointers = stackalloc void*[16];
        var args = new KernelArgs(storage, 1024, pointers, 16);
        write(ref args);
        context.Launch(function, elements, args, entry);
    }

    private static void AddScalar(ref KernelArgs args, DType dtype, double value)
    {
        if (dtype == DType.F32)
            args.Add((float)value);
        else
            args.Add(value);
    }

    /// <summary>The bit pattern of <paramref name="value"/> stored as <paramref name="dtype"/>, in the low bytes.</summary>
    private static ulong Bits(DType dtype, double value)
    {
        ulong bits = 0;
        DTypeCodec.Write((byte*)&bits, dtype, 0, value);
        return bits;
    }

    private static string BitsSuffix(DType dtype) => $"b{dtype.SizeOf()}";

    private string FloatSuffix(string kernel, DType dtype) => dtype switch
    {
        DType.F32 => "f32",
        DType.F64 => "f64",
        _ => throw new NotSupportedException($"{Name} {kernel}: dtype {dtype.Name()} is a storage type; compute in f32 or f64"),
    };

    private NotSupportedException NotYet(string op)
        => new($"{Name}: {op} has no CUDA kernel yet (the CUDA backend is being built: memory and elementwise ops run on the GPU so far)");
}
