using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

internal sealed unsafe partial class CudaBackend
{
    // ---- matrix products: cuBLAS ----

    /// <summary>Lets F32 products use TF32 tensor cores (10-bit mantissa inputs, F32 accumulation); off by default,
    /// as PyTorch's <c>allow_tf32</c> for matmul.</summary>
    public static bool AllowTf32 { get; set; }

    /// <inheritdoc/>
    public void Gemm(in GemmArgs args, DType dtype, nint a, nint b, nint c)
    {
        if (args.Batch == 0 || args.M == 0 || args.N == 0)
            return;
        context.MakeCurrent();
        // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands and m, n.
        var (opA, opB) = (args.TransA ? Cublas.OpT : Cublas.OpN, args.TransB ? Cublas.OpT : Cublas.OpN);
        int status;
        switch (dtype)
        {
            case DType.F32:
            {
                float alpha = (float)args.Alpha, beta = (float)args.Beta;
                status = Cublas.GemmStridedBatchedEx(context.Cublas, opB, opA, args.N, args.M, args.K, &alpha,
                    b, Cublas.R32F, args.Ldb, args.StrideB, a, Cublas.R32F, args.Lda, args.StrideA, &beta,
                    c, Cublas.R32F, args.Ldc, args.StrideC, args.Batch, AllowTf32 ? Cublas.Compute32FFastTf32 : Cublas.Compute32F, Cublas.GemmDefault);
                break;
            }
            case DType.F64:
            {
                double alpha = args.Alpha, beta = args.Beta;
                status = Cublas.GemmStridedBatchedEx(context.Cublas, opB, opA, args.N, args.M, args.K, &alpha,
                    b, Cublas.R64F, args.Ldb, args.StrideB, a, Cublas.R64F, args.Lda, args.StrideA, &beta,
                    c, Cublas.R64F, args.Ldc, args.StrideC, args.Batch, Cublas.Compute64F, Cublas.GemmDefault);
                break;
            }
            case DType.F16 or DType.BF16:
            {
                // 16-bit inputs and output, F32 accumulation (tensor cores).
                var type = dtype == DType.F16 ? Cublas.R16F : Cublas.R16BF;
                float alpha = (float)args.Alpha, beta = (float)args.Beta;
                status = Cublas.GemmStridedBatchedEx(context.Cublas, opB, opA, args.N, args.M, args.K, &alpha,
                    b, type, args.Ldb, args.StrideB, a, type, args.Lda, args.StrideA, &beta,
                    c, type, args.Ldc, args.StrideC, args.Batch, Cublas.Compute32F, Cublas.GemmDefault);
                break;
            }
            default:
                throw new NotSupportedException($"{Name} Gemm: dtype {dtype.Name()} has no GEMM; use f32, f64, f16 or bf16");
        }
        Cublas.Check(status, "cublasGemmStridedBatchedEx");
    }
}
