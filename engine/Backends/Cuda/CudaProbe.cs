using System.Text;
using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

/// <summary>What the CUDA driver reports about one GPU.</summary>
public sealed record CudaDeviceInfo(int Index, string Name, int ComputeMajor, int ComputeMinor, int Multiprocessors, long TotalMemoryBytes)
{
    /// <inheritdoc/>
    public override string ToString()
        => $"cuda:{Index} {Name}, compute capability {ComputeMajor}.{ComputeMinor}, {Multiprocessors} SMs, {TotalMemoryBytes / (1024.0 * 1024 * 1024):F1} GiB";
}

/// <summary>Whether CUDA can be used here and, if not, why: the driver library missing (with the places
/// searched), the driver failing to initialise (with its status), or no device.</summary>
public sealed record CudaStatus(bool Available, string Reason, int DriverVersion, IReadOnlyList<CudaDeviceInfo> Devices)
{
    /// <inheritdoc/>
    public override string ToString()
        => Available
            ? $"CUDA driver {DriverVersion / 1000}.{DriverVersion % 1000 / 10}: {string.Join("; ", Devices)}"
            : $"CUDA unavailable: {Reason}";
}

/// <summary>Probes the CUDA driver once per process; never throws.</summary>
internal static class CudaProbe
{
    private static readonly Lazy<CudaStatus> s_status = new(Probe);

    /// <summary>The probe's result.</summary>
    public static CudaStatus Status => s_status.Value;

    private static CudaStatus Probe()
    {
        try
        {
            Driver.Check(Driver.Init(0), "cuInit");
            Driver.Check(Driver.DriverGetVersion(out var version), "cuDriverGetVersion");
            Driver.Check(Driver.DeviceGetCount(out var count), "cuDeviceGetCount");
            if (count == 0)
                return new CudaStatus(false, $"the CUDA driver ({version}) reports no device", version, []);
            var devices = Enumerable.Range(0, count).Select(Describe).ToList();
            return new CudaStatus(true, "", version, devices);
        }
        catch (DllNotFoundException)
        {
            return new CudaStatus(false, $"driver library {CudaLibraries.DescribeMissing(CudaLibraries.Driver)}", 0, []);
        }
        catch (EntryPointNotFoundException e)
        {
            return new CudaStatus(false, $"the CUDA driver library lacks a function Frugal needs: {e.Message}", 0, []);
        }
        catch (CudaException e)
        {
            return new CudaStatus(false, e.Message, 0, []);
        }
    }

    private static unsafe CudaDeviceInfo Describe(int ordinal)
    {
        Driver.Check(Driver.DeviceGet(out var device, ordinal), "cuDeviceGet");
        Span<byte> name = stackalloc byte[256];
        fixed (byte* p = name)
            Driver.Check(Driver.DeviceGetName(p, name.Length, device), "cuDeviceGetName");
        var length = name.IndexOf((byte)0);
        Driver.Check(Driver.DeviceGetAttribute(out var major, Driver.AttributeComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        Driver.Check(Driver.DeviceGetAttribute(out var minor, Driver.AttributeComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        Driver.Check(Driver.DeviceGetAttribute(out var sms, Driver.AttributeMultiprocessorCount, device), "cuDeviceGetAttribute");
        Driver.Check(Driver.DeviceTotalMem(out var bytes, device), "cuDeviceTotalMem_v2");
        return new CudaDeviceInfo(ordinal, Encoding.UTF8.GetString(name[..(length < 0 ? name.Length : length)]), major, minor, sms, (long)bytes);
    }
}
