using System.Runtime.InteropServices;
using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

/// <summary>An owned CUDA object. Released by <see cref="SafeHandle.Dispose()"/> only: when the garbage collector
/// finalizes an undisposed handle, no CUDA call is made (the handle is marked invalid and the driver reclaims the
/// object at process exit), because CUDA must not be called from the finalizer thread.</summary>
internal abstract class CudaHandle : SafeHandle
{
    protected CudaHandle(nint value)
        : base(0, ownsHandle: true) => SetHandle(value);

    /// <inheritdoc/>
    public override bool IsInvalid => handle == 0;

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (!disposing)
            SetHandleAsInvalid();
        base.Dispose(disposing);
    }
}

/// <summary>The device's primary context, retained once per <see cref="CudaContext"/>.</summary>
internal sealed class PrimaryContextHandle(nint context, int device) : CudaHandle(context)
{
    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Driver.DevicePrimaryCtxRelease(device) == 0;
}

/// <summary>A stream created by Frugal.</summary>
internal sealed class StreamHandle(nint stream) : CudaHandle(stream)
{
    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Driver.StreamDestroy(handle) == 0;
}

/// <summary>A loaded module (one compiled kernel file).</summary>
internal sealed class ModuleHandle(nint module) : CudaHandle(module)
{
    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Driver.ModuleUnload(handle) == 0;
}

/// <summary>A cuBLAS handle bound to the device's stream.</summary>
internal sealed class CublasHandle(nint cublas) : CudaHandle(cublas)
{
    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Cublas.Destroy(handle) == 0;
}

/// <summary>A cuSPARSE handle bound to the device's stream.</summary>
internal sealed class CusparseHandle(nint cusparse) : CudaHandle(cusparse)
{
    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Cusparse.Destroy(handle) == 0;
}

/// <summary>A cuSPARSE sparse-matrix descriptor (host object over device arrays owned elsewhere).</summary>
internal sealed class SparseMatrixDescriptor(nint descriptor) : CudaHandle(descriptor)
{
    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Cusparse.DestroySpMat(handle) == 0;
}

/// <summary>A cuSPARSE dense-matrix descriptor (host object over a device array owned elsewhere).</summary>
internal sealed class DenseMatrixDescriptor(nint descriptor) : CudaHandle(descriptor)
{
    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Cusparse.DestroyDnMat(handle) == 0;
}
