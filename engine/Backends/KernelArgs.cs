namespace Frugal.Backends;

/// <summary>Elementwise functions of one tensor. Scalar-parameterised ones read <c>alpha</c>.</summary>
public enum UnaryOp
{
    /// <summary>-x</summary>
    Neg,
    /// <summary>e^x</summary>
    Exp,
    /// <summary>ln x</summary>
    Log,
    /// <summary>tanh x</summary>
    Tanh,
    /// <summary>1 / (1 + e^-x)</summary>
    Sigmoid,
    /// <summary>max(x, 0)</summary>
    Relu,
    /// <summary>GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (PyTorch's approximate='tanh').</summary>
    Gelu,
    /// <summary>√x</summary>
    Sqrt,
    /// <summary>|x|</summary>
    Abs,
    /// <summary>x + alpha</summary>
    AddScalar,
    /// <summary>x · alpha</summary>
    MulScalar,
    /// <summary>x ^ alpha</summary>
    PowScalar,
}

/// <summary>Elementwise functions of two broadcast tensors. Comparisons write U8 0/1.</summary>
public enum BinaryOp
{
    /// <summary>a + b</summary>
    Add,
    /// <summary>a - b</summary>
    Sub,
    /// <summary>a · b</summary>
    Mul,
    /// <summary>a / b</summary>
    Div,
    /// <summary>a ^ b</summary>
    Pow,
    /// <summary>max(a, b)</summary>
    Maximum,
    /// <summary>min(a, b)</summary>
    Minimum,
    /// <summary>a == b</summary>
    Eq,
    /// <summary>a != b</summary>
    Ne,
    /// <summary>a &lt; b</summary>
    Lt,
    /// <summary>a &lt;= b</summary>
    Le,
    /// <summary>a &gt; b</summary>
    Gt,
    /// <summary>a &gt;= b</summary>
    Ge,
}

/// <summary>Reductions over axes.</summary>
public enum ReduceOp
{
    /// <summary>Σ</summary>
    Sum,
    /// <summary>Σ / count</summary>
    Mean,
    /// <summary>max</summary>
    Max,
    /// <summary>min</summary>
    Min,
}

/// <summary>Helpers on op kinds.</summary>
public static class OpKinds
{
    /// <summary>True for comparisons (result U8).</summary>
    public static bool IsComparison(this BinaryOp op) => op >= BinaryOp.Eq;
}

/// <summary>A strided batched row-major GEMM: C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b], op(A) m×k, op(B) k×n.
/// Leading dimensions and batch strides are in elements; a batch stride of 0 broadcasts one matrix.</summary>
public readonly record struct GemmArgs(
    bool TransA, bool TransB, int Batch, int M, int N, int K,
    double Alpha, int Lda, long StrideA, int Ldb, long StrideB, double Beta, int Ldc, long StrideC);

/// <summary>Geometry of a 2-D convolution over NCHW input and [OutC, C, KH, KW] weight.</summary>
public readonly record struct Conv2dArgs(
    int N, int C, int H, int W, int OutC, int KH, int KW,
    int StrideH, int StrideW, int PadH, int PadW, int DilationH = 1, int DilationW = 1)
{
    /// <summary>Output height.</summary>
    public int OutH => (H + 2 * PadH - DilationH * (KH - 1) - 1) / StrideH + 1;

    /// <summary>Output width.</summary>
    public int OutW => (W + 2 * PadW - DilationW * (KW - 1) - 1) / StrideW + 1;

    /// <summary>How many images' im2col columns (C·KH·KW × OH·OW values each) fit in <paramref name="budgetElements"/>:
    /// at least 1, at most N. Backends convolve in chunks of this many images.</summary>
    public int ImagesPerChunk(long budgetElements)
    {
        var perImage = (long)C * KH * KW * OutH * OutW;
        return (int)Math.Clamp(budgetElements / Math.Max(perImage, 1), 1, N);
    }
}

/// <summary>Geometry of a 2-D pooling window over NCHW input.</summary>
public readonly record struct Pool2dArgs(int N, int C, int H, int W, int KH, int KW, int StrideH, int StrideW, int PadH, int PadW)
{
    /// <summary>Output height.</summary>
    public int OutH => (H + 2 * PadH - KH) / StrideH + 1;

    /// <summary>Output width.</summary>
    public int OutW => (W + 2 * PadW - KW) / StrideW + 1;
}

/// <summary>Hyper-parameters of one SGD step (PyTorch semantics: weight decay added to the gradient,
/// momentum buffer b = μ·b + (1-dampening)·g, nesterov g + μ·b).</summary>
public readonly record struct SgdArgs(double Lr, double Momentum, double Dampening, double WeightDecay, bool Nesterov, bool FirstStep);

/// <summary>A block-sparse matrix in device memory, CSR over Block × Block blocks (Block 1 is plain CSR, larger
/// blocks are BSR): the pattern has Rows × Cols blocks, so the matrix is [Rows·Block, Cols·Block]; I32 row pointers
/// (Rows + 1) and block column indices (Nnz stored blocks); F32 values, Block² per stored block, row-major within the
/// block, blocks in pattern order (absent, 0, where a kernel needs only the pattern).</summary>
public readonly record struct CsrView(int Rows, int Cols, int Nnz, nint RowPtr, nint ColIdx, nint Values, int Block = 1);

/// <summary>Hyper-parameters of one Adam/AdamW step; <c>Step</c> counts from 1. <c>Decoupled</c> selects AdamW
/// (p -= lr·wd·p) over Adam's L2 (g += wd·p).</summary>
public readonly record struct AdamArgs(double Lr, double Beta1, double Beta2, double Eps, double WeightDecay, bool Decoupled, long Step);

/// <summary>A packed low-bit weight [Rows, Cols] in device memory (the layout of <c>kernels/common.cuh</c>'s
/// <c>QuantShape</c>): value i = r·Cols + c is the <c>Bits</c>-bit unsigned code at bit offset i·Bits of
/// <c>Codes</c>, least significant bits first (Bits 1, 2, 4 or 8, so no code straddles a byte); every
/// <c>Group</c> consecutive values of a row share one <see cref="QuantScale"/> of <c>Scales</c>, and
/// value = scale · (code − zero).</summary>
public readonly record struct QuantView(int Rows, int Cols, int Bits, int Group, nint Codes, nint Scales)
{
    /// <summary>Number of values.</summary>
    public long Count => (long)Rows * Cols;

    /// <summary>Number of groups (of scales).</summary>
    public long Groups => Count / Group;

    /// <summary>Bytes of packed codes: ⌈Rows·Cols·Bits / 8⌉.</summary>
    public long CodeBytes => (Count * Bits + 7) / 8;

    /// <summary>Refuses a weight whose groups do not divide blocks of <paramref name="block"/> values, for the op
    /// <paramref name="op"/> that works a block of whole groups at a time.</summary>
    internal void CheckGroupsDivide(int block, string op)
    {
        if (block % Group != 0)
            throw new NotSupportedException($"{op}: the weight's groups of {Group} values do not divide its blocks of {block}");
    }
}

/// <summary>Scale and zero point of one group of a packed weight: <c>struct QuantScale</c> of
/// <c>kernels/common.cuh</c>, 8 bytes (two F32 per group in a scales tensor).</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
public readonly record struct QuantScale(float Scale, float Zero);

/// <summary>How a dense weight becomes codes: the scheme that picks each group's scale and zero, and the rounding
/// (to nearest, or stochastic: code = ⌊t + u⌋ with u = <see cref="Philox.RoundingOffset"/>(Seed, Offset + i), uniform
/// in [0, 1) with 16 random bits, unbiased to 2^-16 of a step).</summary>
public readonly record struct QuantizeArgs(QuantScheme Scheme, bool Stochastic, ulong Seed, ulong Offset);
