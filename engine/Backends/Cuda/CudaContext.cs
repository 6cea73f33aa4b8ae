using System.Text;
using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

/// <summary>Kernel arguments for <c>cuLaunchKernel</c>: each value copied into caller-provided storage (stack) and
/// a pointer to it recorded, in order.</summary>
internal unsafe ref struct KernelArgs(byte* storage, int capacity, void** pointers, int maxArgs)
{
    private int _used;
    private int _count;

    /// <summary>The pointer array to pass as <c>kernelParams</c>.</summary>
    public readonly void** Pointers => pointers;

    /// <summary>Appends one argument (8-byte aligned slot).</summary>
    public void Add<T>(T value) where T : unmanaged
    {
        var size = (sizeof(T) + 7) & ~7;
        if (_used + size > capacity || _count == maxArgs)
            throw new InvalidOperationException($"kernel arguments exceed {capacity} bytes or {maxArgs} arguments");
        *(T*)(storage + _used) = value;
        pointers[_count++] = storage + _used;
        _used += size;
    }
}

/// <summary>One GPU as Frugal uses it: the retained primary context, one non-blocking stream on which every
/// copy and kernel runs in order, and the kernel modules compiled for its architecture through the kernel cache.
/// Host reads synchronise the stream; nothing else does.</summary>
internal sealed unsafe class CudaContext : IDisposable
{
    private const int ThreadsPerBlock = 256;
    private readonly PrimaryContextHandle _context;
    private readonly StreamHandle _stream;
    private readonly KernelCache _kernels;
    private readonly Dictionary<string, ModuleHandle> _modules = new(StringComparer.Ordinal);
    private readonly Dictionary<(string, string), nint> _functions = [];
    private readonly Lock _lock = new();
    private CublasHandle? _cublas;
    private CusparseHandle? _cusparse;

    public CudaContext(int ordinal, CudaDeviceInfo info)
    {
        Ordinal = ordinal;
        Info = info;
        Architecture = $"sm_{info.ComputeMajor}{info.ComputeMinor}";
        Driver.Check(Driver.DeviceGet(out var device, ordinal), "cuDeviceGet");
        Driver.Check(Driver.DevicePrimaryCtxRetain(out var context, device), "cuDevicePrimaryCtxRetain");
        _context = new PrimaryContextHandle(context, device);
        MakeCurrent();
        Driver.Check(Driver.StreamCreate(out var stream, Driver.StreamNonBlocking), "cuStreamCreate");
        _stream = new StreamHandle(stream);
        _kernels = new KernelCache(KernelCache.DefaultDirectory(), new NvrtcCompiler());
    }

    public int Ordinal { get; }

    public CudaDeviceInfo Info { get; }

    /// <summary>The NVRTC target, e.g. sm_90.</summary>
    public string Architecture { get; }

    /// <summary>The stream every operation of this device is ordered on.</summary>
    public nint Stream => _stream.DangerousGetHandle();

    /// <summary>Binds the context to the calling thread (every entry point calls it: pool threads move around).</summary>
    public void MakeCurrent() => Driver.Check(Driver.CtxSetCurrent(_context.DangerousGetHandle()), "cuCtxSetCurrent");

    /// <summary>Waits for everything queued on the stream.</summary>
    public void Synchronize() => Driver.Check(Driver.StreamSynchronize(Stream), "cuStreamSynchronize");

    /// <summary>The kernel <paramref name="entry"/> of the embedded file <paramref name="file"/>, compiled and loaded on first use.</summary>
    public nint Function(string file, string entry) => Function(file, () => KernelSources.Read(file), entry);

    /// <summary>The kernel <paramref name="entry"/> of the source named <paramref name="file"/> (text from
    /// <paramref name="source"/> on first use), compiled through the kernel cache and loaded once.</summary>
    public nint Function(string file, Func<string> source, string entry)
    {
        lock (_lock)
        {
            if (_functions.TryGetValue((file, entry), out var cached))
                return cached;
            if (!_modules.TryGetValue(file, out var module))
            {
                var cubin = _kernels.Cubin(file, source(), Architecture);
                nint loaded;
                fixed (byte* image = cubin)
                    Driver.Check(Driver.ModuleLoadData(out loaded, image), $"cuModuleLoadData({file})");
                _modules[file] = module = new ModuleHandle(loaded);
            }
            var name = Encoding.ASCII.GetBytes(entry + "\0");
            nint function;
            fixed (byte* p = name)
                Driver.Check(Driver.ModuleGetFunction(out function, module.DangerousGetHandle(), p), $"cuModuleGetFunction({file}:{entry})");
            _functions[(file, entry)] = function;
            return function;
        }
    }

    /// <summary>The cuBLAS handle of this device, created on first use and bound to the stream.</summary>
    public nint Cublas
    {
        get
        {
            lock (_lock)
            {
                if (_cublas is null)
                {
                    MakeCurrent();
                    Native.Cublas.Check(Native.Cublas.Create(out var handle), "cublasCreate_v2");
                    _cublas = new CublasHandle(handle);
                    Native.Cublas.Check(Native.Cublas.SetStream(handle, Stream), "cublasSetStream_v2");
                }
                return _cublas.DangerousGetHandle();
            }
        }
    }

    /// <summary>The cuSPARSE handle of this device, created on first use and bound to the stream.</summary>
    public nint Cusparse
    {
        get
        {
            lock (_lock)
            {
                if (_cusparse is null)
                {
                    MakeCurrent();
                    int status;
                    nint handle;
                    try
                    {
                        status = Native.Cusparse.Create(out handle);
                    }
                    catch (DllNotFoundException)
                    {
                        throw new InvalidOperationException($"cuSPARSE (for CSR weights on the GPU): {CudaLibraries.DescribeMissing(CudaLibraries.Cusparse)}");
                    }
                    Native.Cusparse.Check(status, "cusparseCreate");
                    _cusparse = new CusparseHandle(handle);
                    Native.Cusparse.Check(Native.Cusparse.SetStream(handle, Stream), "cusparseSetStream");
                }
                return _cusparse.DangerousGetHandle();
            }
        }
    }

    /// <summary>Launches a grid-stride kernel over <paramref name="elements"/> elements on the stream.</summary>
    public void Launch(nint function, long elements, in KernelArgs args, string what)
    {
        var blocks = (int)Math.Min((elements + ThreadsPerBlock - 1) / ThreadsPerBlock, 32L * Math.Max(Info.Multiprocessors, 1));
        Launch(function, new LaunchConfig(blocks, ThreadsPerBlock), args, what);
    }

    /// <summary>Launches a row kernel: one block of 256 threads per row, rows beyond the grid taken in turn.</summary>
    public void LaunchRows(nint function, long rows, in KernelArgs args, string what)
        => Launch(function, new LaunchConfig((int)Math.Min(rows, 65535), ThreadsPerBlock), args, what);

    /// <summary>Launches <paramref name="function"/> on the stream as <paramref name="config"/> says (nothing for an
    /// empty grid); the driver refuses geometry beyond the device's limits.</summary>
    public void Launch(nint function, in LaunchConfig config, in KernelArgs args, string what)
    {
        Dim3 grid = config.Grid, block = config.Block;
        if (grid.Count == 0)
            return;
        Driver.Check(Driver.LaunchKernel(function, (uint)grid.X, (uint)grid.Y, (uint)grid.Z, (uint)block.X, (uint)block.Y, (uint)block.Z,
            (uint)config.SharedBytes, Stream, args.Pointers, null), $"cuLaunchKernel({what})");
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var m in _modules.Values)
                m.Dispose();
            _modules.Clear();
            _functions.Clear();
            _cublas?.Dispose();
            _cusparse?.Dispose();
        }
        _stream.Dispose();
        _context.Dispose();
    }
}
