using Frugal.Backends;
using Frugal.Backends.Cpu;
using Frugal.Backends.Cuda;
using Frugal.Memory;

namespace Frugal;

/// <summary>Kind of device.</summary>
public enum DeviceKind
{
    /// <summary>The host processor.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU.</summary>
    Cuda,
}

/// <summary>A place where tensors live: one kernel table (<see cref="IBackend"/>) and one categorised allocator.
/// <see cref="Cpu"/> is the process-wide host device; <see cref="CreateCpu"/> makes an isolated one whose
/// counters only see its own tensors (tests of exact memory use it).</summary>
public sealed class Device
{
    private static readonly Lazy<Device> s_cpu = new(() => CreateCpu("cpu"));
    private static readonly Lock s_cudaLock = new();
    private static readonly Dictionary<int, Device> s_cuda = [];

    private Device(DeviceKind kind, int index, string name, Allocator allocator, Func<Device, IBackend> backend)
    {
        Kind = kind;
        Index = index;
        Name = name;
        Allocator = allocator;
        Backend = backend(this);
    }

    /// <summary>The process-wide CPU device.</summary>
    public static Device Cpu => s_cpu.Value;

    /// <summary>The device to train on by default: <see cref="Cpu"/> for now. It will return <c>Cuda(0)</c> when
    /// a GPU is present once the CUDA backend's conformance suite has passed on a GPU.</summary>
    public static Device Best() => Cpu;

    /// <summary>True when the CUDA driver loads and reports at least one GPU; never throws (see <see cref="CudaStatus"/>).</summary>
    public static bool IsCudaAvailable => CudaProbe.Status.Available;

    /// <summary>The CUDA driver's answer: its version and GPUs, or why CUDA cannot be used here (which library is
    /// missing and where it was looked for, or the driver's error).</summary>
    public static CudaStatus CudaStatus => CudaProbe.Status;

    /// <summary>GPU <paramref name="index"/> (one context, one stream, a caching allocator with the CPU's categories).
    /// Until the CUDA backend has passed its conformance suite on a GPU (the GPU bundle's report),
    /// <see cref="Best"/> keeps choosing the CPU: ask for a GPU by name.</summary>
    /// <exception cref="InvalidOperationException">CUDA is unavailable: the message says which library or device is missing.</exception>
    /// <exception cref="ArgumentOutOfRangeException">No GPU has that index.</exception>
    public static Device Cuda(int index = 0)
    {
        var status = CudaStatus;
        if (!status.Available)
            throw new InvalidOperationException($"cuda:{index}: {status}");
        if (index < 0 || index >= status.Devices.Count)
            throw new ArgumentOutOfRangeException(nameof(index), $"cuda:{index}: the CUDA driver reports {status.Devices.Count} device(s)");
        lock (s_cudaLock)
        {
            if (!s_cuda.TryGetValue(index, out var device))
            {
                var context = new CudaContext(index, status.Devices[index]);
                var name = $"cuda:{index}";
                s_cuda[index] = device = new Device(DeviceKind.Cuda, index, name, new CudaAllocator(context, name), d => new CudaBackend(context, d.Allocator));
            }
            return device;
        }
    }

    /// <summary>A new CPU device with its own allocator and counters (same kernels as <see cref="Cpu"/>).</summary>
    public static Device CreateCpu(string name) => new(DeviceKind.Cpu, 0, name, new CpuAllocator(name), d => new CpuBackend(d));

    /// <summary>Kind of device.</summary>
    public DeviceKind Kind { get; }

    /// <summary>Ordinal among devices of its kind.</summary>
    public int Index { get; }

    /// <summary>Name for messages ("cpu", "cuda:0").</summary>
    public string Name { get; }

    /// <summary>The kernel table.</summary>
    public IBackend Backend { get; }

    /// <summary>The categorised allocator.</summary>
    public Allocator Allocator { get; }

    /// <inheritdoc/>
    public override string ToString() => Name;
}
