namespace Frugal.Backends.Cuda;

/// <summary>A CUDA library call returned an error status: the message names the function, the status name and
/// its number.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception for <paramref name="function"/> returning <paramref name="status"/>.</summary>
    public CudaException(string function, int status, string statusName)
        : base($"{function} failed: {statusName} ({status})")
    {
        Function = function;
        Status = status;
        StatusName = statusName;
    }

    /// <summary>The CUDA function that failed.</summary>
    public string Function { get; }

    /// <summary>Its status code.</summary>
    public int Status { get; }

    /// <summary>The status's name.</summary>
    public string StatusName { get; }
}
