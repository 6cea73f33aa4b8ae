using Frugal.Backends.Cuda.Native;
using Frugal.Memory;

namespace Frugal.Backends.Cuda;

internal sealed unsafe partial class CudaBackend
{
    private const string Sparse = "sparse.cu";

    // ---- CSR and BSR weights: CSR through cuSPARSE's generic SpMM and SDDMM, BSR through the block kernels ----

    /// <inheritdoc/>
    public void CsrMultiplyTransposed(in CsrView w, StridedView xT, StridedView yT)
    {
        if (w.Block == 1)
            CusparseMultiply(w, Cusparse.OpN, xT, yT);
        else
            RunSparse("csr_multiply_transposed", yT.Numel, w, xT.Data, yT.Data, yT.Shape[1]);
    }

    /// <inheritdoc/>
    public void CsrMultiply(in CsrView w, StridedView dyT, StridedView dxT)
    {
        if (w.Block == 1)
            CusparseMultiply(w, Cusparse.OpT, dyT, dxT);
        else
            RunSparse("csr_multiply", dxT.Numel, w, dyT.Data, dxT.Data, dxT.Shape[1]);
    }

    /// <inheritdoc/>
    public void CsrSampledGradient(in CsrView w, StridedView dyT, StridedView xT, StridedView dValues)
    {
        if (w.Block != 1)
        {
            RunSparse("csr_sampled_gradient", (long)w.Nnz * w.Block * w.Block, w with { Values = dValues.Data }, dyT.Data, xT.Data, xT.Shape[1]);
            return;
        }
        if (w.Nnz == 0)
            return;
        // dValues = (dYᵀ [rows, batch] · (Xᵀ [cols, batch])ᵀ) on W's pattern, from zero (see CusparseMultiply).
        Fill(dValues, 0);
        using var c = CsrDescriptor(w with { Values = dValues.Data });
        using var a = DenseDescriptor(dyT);
        using var b = DenseDescriptor(xT);
        RunCusparse(Cusparse.OpN, Cusparse.OpT, a, b, c, "cusparseSDDMM", Cusparse.SddmmBufferSize, Cusparse.Sddmm, Cusparse.SddmmDefault);
    }

    /// <summary>C [·, batch] = op(W) · B [·, batch] through cuSPARSE's SpMM (zeros for an empty pattern). C is
    /// zeroed first: unlike cuBLAS, cuSPARSE does not document that beta = 0 leaves C unread, and outputs are
    /// uninitialised memory (NaN bytes on the emulator, which reads C whenever the documentation allows it).</summary>
    private void CusparseMultiply(in CsrView w, int opA, StridedView b, StridedView c)
    {
        Fill(c, 0);
        if (w.Nnz == 0)
            return;
        using var a = CsrDescriptor(w);
        using var bd = DenseDescriptor(b);
        using var cd = DenseDescriptor(c);
        RunCusparse(opA, Cusparse.OpN, a, bd, cd, "cusparseSpMM", Cusparse.SpMMBufferSize, Cusparse.SpMM, Cusparse.SpMMDefault);
    }

    private delegate int CusparseBufferSize(nint handle, int opA, int opB, void* alpha, nint a, nint b, void* beta, nint c, int computeType, int algorithm, out nuint bytes);

    private delegate int CusparseProduct(nint handle, int opA, int opB, void* alpha, nint a, nint b, void* beta, nint c, int computeType, int algorithm, nint buffer);

    /// <summary>One generic cuSPARSE product (alpha 1, beta 0, F32) with its workspace from the allocator.</summary>
    private void RunCusparse(int opA, int opB, CudaHandle a, CudaHandle b, CudaHandle c, string name, CusparseBufferSize size, CusparseProduct product, int algorithm)
    {
        context.MakeCurrent();
        var handle = context.Cusparse;
        float alpha = 1, beta = 0;
        var (ha, hb, hc) = (a.DangerousGetHandle(), b.DangerousGetHandle(), c.DangerousGetHandle());
        Cusparse.Check(size(handle, opA, opB, &alpha, ha, hb, &beta, hc, Cusparse.R32F, algorithm, out var bytes), name + "_bufferSize");
        var buffer = bytes == 0 ? null : allocator.Allocate((long)bytes, MemoryCategory.Workspace, name);
        try
        {
            Cusparse.Check(product(handle, opA, opB, &alpha, ha, hb, &beta, hc, Cusparse.R32F, algorithm, buffer?.Address ?? 0), name);
        }
        finally
        {
            buffer?.Release();
        }
    }

    private static SparseMatrixDescriptor CsrDescriptor(in CsrView w)
    {
        Cusparse.Check(Cusparse.CreateCsr(out var d, w.Rows, w.Cols, w.Nnz, w.RowPtr, w.ColIdx, w.Values,
            Cusparse.Index32I, Cusparse.Index32I, Cusparse.IndexBaseZero, Cusparse.R32F), "cusparseCreateCsr");
        return new SparseMatrixDescriptor(d);
    }

    /// <summary>A contiguous row-major F32 matrix [rows, cols].</summary>
    private static DenseMatrixDescriptor DenseDescriptor(StridedView m)
    {
        Cusparse.Check(Cusparse.CreateDnMat(out var d, m.Shape[0], m.Shape[1], m.Shape[1], m.Data, Cusparse.R32F, Cusparse.OrderRow), "cusparseCreateDnMat");
        return new DenseMatrixDescriptor(d);
    }

    /// <summary>The sparse kernels share one signature: (row_ptr, col_idx, values, a, b, rows, cols, block, batch).</summary>
    private void RunSparse(string kernel, long threads, CsrView m, nint a, nint b, int batch)
        => Run(Sparse, kernel, threads, (ref KernelArgs k) =>
        {
            k.Add(m.RowPtr);
            k.Add(m.ColIdx);
            k.Add(m.Values);
            k.Add(a);
            k.Add(b);
            k.Add((long)m.Rows);
            k.Add((long)m.Cols);
            k.Add((long)m.Block);
            k.Add((long)batch);
        });
}
