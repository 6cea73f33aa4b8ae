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

    /// <summary>Factors of one 8-bit Adam step: <c>struct Adam8BitFactors</c>, 56 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Adam8BitFactors
    {
        public float Lr, Beta1, Beta2, OneMinusBeta1, OneMinusBeta2, Eps, WeightDecay, C1, C2, Decay;
        public int Decoupled;
        public float MStep, RStep, Tiny;

        /// <summary>The CPU twin's factors: the Adam ones in double on the host, then rounded to F32, as are the
        /// composed reading's scalars.</summary>
        public static Adam8BitFactors From(in AdamArgs s) => new()
        {
            Lr = (float)s.Lr, Beta1 = (float)s.Beta1, Beta2 = (float)s.Beta2, OneMinusBeta1 = (float)(1 - s.Beta1), OneMinusBeta2 = (float)(1 - s.Beta2),
            Eps = (float)s.Eps, WeightDecay = (float)s.WeightDecay, C1 = (float)(1 / (1 - Math.Pow(s.Beta1, s.Step))),
            C2 = (float)(1 / Math.Sqrt(1 - Math.Pow(s.Beta2, s.Step))), Decay = (float)(1 - s.Lr * s.WeightDecay), Decoupled = s.Decoupled ? 1 : 0,
            MStep = (float)(1.0 / 127), RStep = (float)(1.0 / 255), Tiny = (float)1e-30,
        };
    }

    /// <summary><c>i64[FRUGAL_MAX_DIMS]</c>.</summary>
    [InlineArray(MaxDims)]
    public struct Dims
    {
        private long _element0;
    }
}
