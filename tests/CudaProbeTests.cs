using Frugal.Backends.Cuda;
using Frugal.Backends.Cuda.Native;

namespace Frugal.Tests;

/// <summary>Finding the CUDA libraries and probing the driver: meaningful with or without a GPU.</summary>
public class CudaProbeTests
{
    [Fact]
    public void CandidatesTryTheCudaFoldersThenTheLoader_NewestMajorFirst()
    {
        // NVRTC 11.x (every 11.2+ release has soname libnvrtc.so.11.2; Debian's libnvrtc11.2 is 11.8) comes last.
        Assert.Equal(
            ["/opt/cuda/lib64/libnvrtc.so.13", "/opt/cuda/lib64/libnvrtc.so.12", "/opt/cuda/lib64/libnvrtc.so.11.2",
             "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so.11.2",
             "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"],
            CudaLibraries.Candidates(CudaLibraries.Nvrtc, "/opt/cuda"));
        Assert.Equal(["/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so.11.2",
                      "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"], CudaLibraries.Candidates(CudaLibraries.Nvrtc, null));
        Assert.StartsWith("libnvrtc.so.13 / libnvrtc.so.12 / libnvrtc.so.11.2 not found; tried ", CudaLibraries.DescribeMissing(CudaLibraries.Nvrtc), StringComparison.Ordinal);
        Assert.Equal(["/usr/local/cuda/lib64/libcuda.so.1", "libcuda.so.1"], CudaLibraries.Candidates(CudaLibraries.Driver, null));
        Assert.Equal(["/usr/local/cuda/lib64/libcusparse.so.12", "libcusparse.so.12"], CudaLibraries.Candidates(CudaLibraries.Cusparse, ""));
        Assert.Equal("/usr/local/cuda/lib64/libcublas.so.13", CudaLibraries.Candidates(CudaLibraries.Cublas, "/usr/local/cuda")[0]);
        Assert.Equal(4, CudaLibraries.Candidates(CudaLibraries.Cublas, "/usr/local/cuda").Count);   // one folder, not two
    }

    [Fact]
    public void ProbeNeverThrowsAndExplainsItself()
    {
        var status = Device.CudaStatus;
        Assert.Equal(status.Available, Device.IsCudaAvailable);
        if (status.Available)
        {
            Assert.NotEmpty(status.Devices);
            Assert.All(status.Devices, d => Assert.False(string.IsNullOrWhiteSpace(d.Name)));
            Assert.All(status.Devices, d => Assert.True(d.ComputeMajor >= 5 && d.TotalMemoryBytes > 0, d.ToString()));
            Assert.True(status.DriverVersion >= 12000, $"driver version {status.DriverVersion}");
        }
        else
        {
            Assert.Empty(status.Devices);
            Assert.False(string.IsNullOrWhiteSpace(status.Reason));
            Assert.StartsWith("CUDA unavailable: ", status.ToString(), StringComparison.Ordinal);
            if (!File.Exists("/usr/local/cuda/lib64/libcuda.so.1") && !NativeLibraryLoads("libcuda.so.1"))
                Assert.Contains("libcuda.so.1 not found; tried /usr/local/cuda/lib64/libcuda.so.1", status.Reason, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void CudaDeviceWithoutADriverSaysWhatIsMissing()
    {
        if (Device.IsCudaAvailable)
        {
            var gpu = Device.Cuda(0);
            Assert.Equal(("cuda:0", DeviceKind.Cuda), (gpu.Name, gpu.Kind));
            Assert.Same(gpu, Device.Cuda(0));
            Assert.Throws<ArgumentOutOfRangeException>(() => Device.Cuda(Device.CudaStatus.Devices.Count));
            return;
        }
        var e = Assert.Throws<InvalidOperationException>(() => Device.Cuda(0));
        Assert.StartsWith("cuda:0: CUDA unavailable: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(Device.CudaStatus.Reason, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CudaExceptionNamesFunctionStatusAndNumber()
    {
        var e = new CudaException("cuMemAlloc_v2", 2, "CUDA_ERROR_OUT_OF_MEMORY");
        Assert.Equal("cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (2)", e.Message);
        Assert.Equal((2, "cuMemAlloc_v2"), (e.Status, e.Function));
    }

    private static bool NativeLibraryLoads(string name)
    {
        if (!System.Runtime.InteropServices.NativeLibrary.TryLoad(name, out var handle))
            return false;
        System.Runtime.InteropServices.NativeLibrary.Free(handle);
        return true;
    }
}
