using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Frugal.Backends.Cuda;

/// <summary>Layouts passed by value to the CUDA kernels, mirroring <c>kernels/common.cuh</c> field for field.
/// The C side asserts the same sizes with <c>static_assert</c>; <c>KernelAbiTests</c> checks both.</summary>
internal static class KernelAbi
{
    /// <summary><c>FRUGAL_MAX_DIMS</c>: the most dimensions a strided kernel operand may have.</summary>
    public const int MaxDims = 8;

    /// <summary>Shape and strides (in elements) of one operand: <c>struct Strided</c>, 136 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Strided
    {
        public int Rank;
        public int Pad;
        public Dims Shape;
        public Dims Stride;

        /// <summary>The layout of <paramref name="view"/>; a rank above <see cref="MaxDims"/> is refused by name.</summary>
        public static Strided From(StridedView view, string operand)
        {
            if (view.Rank > MaxDims)
                throw new NotSupportedException($"cuda kernels take at most {MaxDims} dimensions; {operand} has shape [{string.Join(", ", view.Shape)}]");
            var s = new Strided { Rank = view.Rank };
            for (var d = 0; d < view.Rank; d++)
            {
                s.Shape[d] = view.Shape[d];
                s.Stride[d] = view.Strides[d];
            }
            return s;
        }
    }

    /// <summary>Geometry of a convolution or pooling window: <c>struct Window</c>, 64 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Window
    {
        public int N, C, H, W;
        public int OutC, KH, KW, OutH;
        public int OutW, StrideH, StrideW, PadH;
        public int PadW, DilationH, DilationW, Pad;

        public static Window From(in Conv2dArgs a) => new()
        {
            N = a.N, C = a.C, H = a.H, W = a.W, OutC = a.OutC, KH = a.KH, KW = a.KW, OutH = a.OutH, OutW = a.OutW,
            StrideH = a.StrideH, StrideW = a.StrideW, PadH = a.PadH, PadW = a.PadW, DilationH = a.DilationH, DilationW = a.DilationW,
        };

        public static Window From(in Pool2dArgs a) => new()
        {
            N = a.N, C = a.C, H = a.H, W = a.W, KH = a.KH, KW = a.KW, OutH = a.OutH, OutW = a.OutW,
            StrideH = a.StrideH, StrideW = a.StrideW, PadH = a.PadH, PadW = a.PadW, DilationH = 1, DilationW = 1,
        };
    }

    /// <summary>Shape of a packed low-bit weight: <c>struct QuantShape</c>, 16 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct QuantShape
    {
        public int Rows, Cols, Bits, Group;

        public static QuantShape From(in QuantView q) => new() { Rows = q.Rows, Cols = q.Cols, Bits = q.Bits, Group = q.Group };
    }

    /// <summary><c>i64[FRUGAL_MAX_DIMS]</c>.</summary>
    [InlineArray(MaxDims)]
    public struct Dims
    {
        private long _element0;
    }
}
