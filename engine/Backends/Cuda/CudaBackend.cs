using Frugal.Backends.Cuda.Native;
using Frugal.Memory;

namespace Frugal.Backends.Cuda;

/// <summary>The CUDA kernel table: every entry of <see cref="IBackend"/> as NVRTC-compiled kernels of
/// <c>kernels/*.cu</c> (elementwise, random, optimizer, row, reduction, indexing, cast, convolution, pooling and
/// CSR kernels), cuBLAS for GEMM and user kernels compiled from their own source, with the CPU backend's semantics
/// (same Philox stream, same rounding, sums in the CPU's order wherever one thread owns an output). Every operation
/// is queued on the device's stream; <see cref="Download"/> (and <see cref="Upload"/>, whose source may die on
/// return) synchronise. One file per kernel family, as the CPU backend.</summary>
internal sealed unsafe partial class CudaBackend(CudaContext context, Allocator allocator) : IBackend
{
    private const string Elementwise = "elementwise.cu";
    private const string Casts = "cast.cu";

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
    public void Cast(StridedView src, StridedView dst)
        => Run(Casts, "cast", dst.Numel, (ref KernelArgs k) =>
        {
            k.Add(src.Data);
            k.Add((int)src.DType);
            k.Add(dst.Data);
            k.Add((int)dst.DType);
            k.Add(dst.Numel);
        });

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

    // ---- helpers ----

    private delegate void ArgWriter(ref KernelArgs args);

    private void Run(string entry, long elements, ArgWriter write) => Run(Elementwise, entry, elements, write);

    private void Run(string file, string entry, long elements, ArgWriter write) => Launch(file, entry, elements, perRow: false, write);

    private delegate void Launcher(nint function, long count, in KernelArgs args, string what);

    /// <summary>Launches <paramref name="entry"/> of the embedded file <paramref name="file"/> over
    /// <paramref name="count"/> elements (grid-stride) or rows (a block per row).</summary>
    private void Launch(string file, string entry, long count, bool perRow, ArgWriter write)
        => Launch(file, () => KernelSources.Read(file), entry, count, perRow ? context.LaunchRows : context.Launch, write);

    /// <summary>Packs the arguments and launches <paramref name="entry"/> of the module <paramref name="module"/>
    /// (compiled from <paramref name="source"/> on first use) over <paramref name="count"/> elements, rows or blocks, as
    /// <paramref name="launch"/> lays out the grid. Room for 24 arguments in 1 KiB, or <paramref name="arguments"/> of
    /// at most 8 bytes each where more.</summary>
    private void Launch(string module, Func<string> source, string entry, long count, Launcher launch, ArgWriter write, int arguments = 24)
    {
        if (count == 0)
            return;
        context.MakeCurrent();
        var function = context.Function(module, source, entry);
        var slots = Math.Max(arguments, 24);
        var bytes = Math.Max(slots * 8, 1024);
        var storage = stackalloc byte[bytes];
        var pointers = stackalloc void*[slots];
        var args = new KernelArgs(storage, bytes, pointers, slots);
        write(ref args);
        launch(function, count, args, entry);
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
}
