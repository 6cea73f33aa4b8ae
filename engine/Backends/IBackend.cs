namespace Frugal.Backends;

/// <summary>The kernel table every device implements: kernels over raw strided buffers. No autograd, no
/// policy, no validation beyond what memory safety needs: ops above have checked shapes, dtypes and devices.
/// Floating kernels accept F32 and F64 (the reference type); <see cref="Cast"/> reaches the storage types.
/// All tensors named "contiguous" must be row-major dense; outputs never alias inputs unless stated.</summary>
public interface IBackend
{
    /// <summary>Backend name for messages.</summary>
    string Name { get; }

    // ---- memory ----

    /// <summary>Host bytes into device memory at <paramref name="dst"/>.</summary>
    void Upload(ReadOnlySpan<byte> src, nint dst);

    /// <summary>Device memory at <paramref name="src"/> into host bytes (synchronizes).</summary>
    void Download(nint src, Span<byte> dst);

    /// <summary>dst = src elementwise over any strides (same shape, same dtype): contiguous copies, concat, slices.</summary>
    void Copy(StridedView src, StridedView dst);

    /// <summary>dst = (dst.DType) src over contiguous buffers of equal length.</summary>
    void Cast(StridedView src, StridedView dst);

    /// <summary>Every element of <paramref name="dst"/> = <paramref name="value"/>.</summary>
    void Fill(StridedView dst, double value);

    // ---- elementwise ----

    /// <summary>y = f(x) (x may be strided, y contiguous of the same shape).</summary>
    void Unary(UnaryOp op, StridedView x, StridedView y, double alpha);

    /// <summary>dx = dy · f'(x) over contiguous buffers; <paramref name="y"/> is f(x) where the derivative uses it.</summary>
    void UnaryBackward(UnaryOp op, StridedView x, StridedView y, StridedView dy, StridedView dx, double alpha);

    /// <summary>y = a ∘ b; a and b are already expanded to y's shape (stride 0 on broadcast axes); y contiguous.</summary>
    void Binary(BinaryOp op, StridedView a, StridedView b, StridedView y);

    /// <summary>y = cond ? a : b; cond is U8; all expanded to y's shape; y contiguous.</summary>
    void Where(StridedView cond, StridedView a, StridedView b, StridedView y);

    // ---- reductions ----

    /// <summary>y = reduce of x over <paramref name="axes"/>; y is contiguous with x's rank (reduced axes of size 1).</summary>
    void Reduce(ReduceOp op, StridedView x, int[] axes, StridedView y);

    /// <summary>y (I32) = index of the first maximum of x along <paramref name="axis"/>; y has x's rank with that axis 1.</summary>
    void ArgMax(StridedView x, int axis, StridedView y);

    // ---- matrix products ----

    /// <summary>Strided batched GEMM over addresses of the same dtype (see <see cref="GemmArgs"/>).</summary>
    void Gemm(in GemmArgs args, DType dtype, nint a, nint b, nint c);

    // ---- normalisation and losses (rows × cols, contiguous) ----

    /// <summary>Row-wise softmax (or log-softmax) of x [rows, cols] into y.</summary>
    void Softmax(StridedView x, StridedView y, bool log);

    /// <summary>dx from y = softmax(x) (or log-softmax) and dy.</summary>
    void SoftmaxBackward(StridedView y, StridedView dy, StridedView dx, bool log);

    /// <summary>Fused cross-entropy: loss[i] = logsumexp(logits[i]) - logits[i, target[i]]; targets I32 [rows].
    /// Rows whose target equals <paramref name="ignoreIndex"/> get loss 0.</summary>
    void CrossEntropy(StridedView logits, StridedView targets, StridedView loss, int ignoreIndex);

    /// <summary>dlogits[i] = scale[i]·(softmax(logits[i]) - onehot(target[i])) with scale = dloss[i] (per row).</summary>
    void CrossEntropyBackward(StridedView logits, StridedView targets, StridedView dloss, StridedView dlogits, int ignoreIndex);

    /// <summary>Layer normalisation of x [rows, cols] with gamma, beta [cols] (either may be absent: Data 0);
    /// writes y and the per-row mean and reciprocal standard deviation [rows] for backward.</summary>
    void LayerNorm(StridedView x, StridedView gamma, StridedView beta, double eps, StridedView y, StridedView mean, StridedView rstd);

    /// <summary>Gradients of layer normalisation; dgamma and dbeta may be absent (Data 0).</summary>
    void LayerNormBackward(StridedView x, StridedView gamma, StridedView mean, StridedView rstd, StridedView dy, StridedView dx, StridedView dgamma, StridedView dbeta);

    // ---- indexing ----

    /// <summary>dst[..., i, ...] = src[..., index[i], ...] along <paramref name="axis"/> (index I32; src, dst contiguous).
    /// Embedding lookup is axis 0 of the table.</summary>
    void IndexSelect(StridedView src, int axis, StridedView index, StridedView dst);

    /// <summary>dst[..., index[i], ...] += src[..., i, ...] along <paramref name="axis"/> (scatter-add, the gradient of
    /// <see cref="IndexSelect"/>; deterministic for repeated indices).</summary>
    void IndexAdd(StridedView src, int axis, StridedView index, StridedView dst);

    // ---- convolution and pooling (NCHW, contiguous) ----

    /// <summary>y = conv2d(x, w) (+ bias when its Data is non-zero).</summary>
    void Conv2d(in Conv2dArgs args, StridedView x, StridedView w, StridedView bias, StridedView y);

    /// <summary>dx = gradient of conv2d with respect to its input.</summary>
    void Conv2dBackwardInput(in Conv2dArgs args, StridedView dy, StridedView w, StridedView dx);

    /// <summary>dw = gradient with respect to the weight (overwritten); dbias when its Data is non-zero.</summary>
    void Conv2dBackwardWeight(in Conv2dArgs args, StridedView x, StridedView dy, StridedView dw, StridedView dbias);

    /// <summary>Max pooling; writes y and the I32 flat (h·W + w) index of each window's maximum.</summary>
    void MaxPool2d(in Pool2dArgs args, StridedView x, StridedView y, StridedView argmax);

    /// <summary>dx (overwritten) from dy through the recorded argmax.</summary>
    void MaxPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView argmax, StridedView dx);

    /// <summary>Average pooling (padding counted in the divisor, PyTorch's count_include_pad=True).</summary>
    void AvgPool2d(in Pool2dArgs args, StridedView x, StridedView y);

    /// <summary>dx (overwritten) of average pooling.</summary>
    void AvgPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView dx);

    // ---- randomness ----

    /// <summary>Dropout: keep element i when philox(seed, i) ≥ p; y = keep ? x/(1-p) : 0; mask (U8) records keep.
    /// The counter-based generator makes results independent of threading and identical across backends.</summary>
    void Dropout(StridedView x, double p, ulong seed, ulong offset, StridedView y, StridedView mask);

    /// <summary>Fills dst with uniform [low, high) or normal(mean=a, std=b) values from philox(seed, offset + i).</summary>
    void Random(StridedView dst, RandomKind kind, double a, double b, ulong seed, ulong offset);

    // ---- optimizers (contiguous, in place) ----

    /// <summary>One SGD step on param, with its momentum buffer when momentum is non-zero.</summary>
    void SgdStep(StridedView param, StridedView grad, StridedView momentum, in SgdArgs args);

    /// <summary>One Adam/AdamW step on param with its first and second moments.</summary>
    void AdamStep(StridedView param, StridedView grad, StridedView m, StridedView v, in AdamArgs args);

    /// <summary>One Adam/AdamW step on param (F32, the first values of <paramref name="mCodes"/>' blocks) with 8-bit
    /// moments of <see cref="Optim.Adam.StateBlock"/> values per block: m = code · absmax / 127 (I8 codes) and
    /// v = r⁴ with r = max(code, ½) · absmax / 255 (U8 codes of v^¼). Each block is read, stepped and quantized back
    /// (absmax = the block's largest |m| or v^¼, codes = round-half-even(x · (levels / max(absmax, 1e-30))),
    /// saturated), padding values of a last partial block included, with no F32 copy of the moments left behind.</summary>
    void Adam8BitStep(StridedView param, StridedView grad, StridedView mCodes, StridedView mAbsmax, StridedView rCodes, StridedView rAbsmax, in AdamArgs args);

    /// <summary>The master-free 8-bit Adam step of a packed weight <paramref name="weight"/> (its values are the
    /// parameter; <paramref name="grad"/> F32 [Rows·Cols]), one state block at a time: the block's values
    /// dequantized, stepped as <see cref="Adam8BitStep"/> steps F32 values, and quantized back as
    /// <see cref="Quantize"/> does with <paramref name="quantize"/>. Codes, scales and moments are those of the three
    /// ops in turn, to the bit, with no F32 copy of the weight in device memory. The weight's group must divide
    /// <see cref="Optim.Adam.StateBlock"/>, so each block holds whole groups.</summary>
    void QuantAdam8BitStep(in QuantView weight, StridedView grad, StridedView mCodes, StridedView mAbsmax, StridedView rCodes, StridedView rAbsmax, in AdamArgs adam, in QuantizeArgs quantize);

    // ---- CSR and BSR weights (activations batch-minor: [features, batch], contiguous, F32) ----

    /// <summary>Yᵀ [rows, batch] = W · Xᵀ for a block-sparse weight W [rows, cols] (logical sizes: the view's block
    /// counts × its block) and Xᵀ [cols, batch].</summary>
    void CsrMultiplyTransposed(in CsrView w, StridedView xT, StridedView yT);

    /// <summary>dXᵀ [cols, batch] = Wᵀ · dYᵀ for dYᵀ [rows, batch].</summary>
    void CsrMultiply(in CsrView w, StridedView dyT, StridedView dxT);

    /// <summary>dValues [nnz·block²] = (dYᵀ · X) sampled on W's pattern: one dot product over the batch per stored value.</summary>
    void CsrSampledGradient(in CsrView w, StridedView dyT, StridedView xT, StridedView dValues);

    // ---- convolution columns (for convolutions whose product is not a dense GEMM: sparse weights) ----

    /// <summary>The im2col columns cols [C·KH·KW, images·OH·OW] of images n0 .. n0 + images of x [N, C, H, W]
    /// (zero where the window reads padding); the layout the dense convolution multiplies.</summary>
    void Im2Col(in Conv2dArgs args, StridedView x, int n0, int images, StridedView cols);

    /// <summary>The adjoint of <see cref="Im2Col"/>: dx of images n0 .. n0 + images (overwritten) = the columns
    /// summed back into the positions they were read from.</summary>
    void Col2Im(in Conv2dArgs args, StridedView cols, int n0, int images, StridedView dx);

    // ---- packed low-bit weights (the Quantized format; dense operands contiguous F32) ----

    /// <summary>Codes and scales of <paramref name="w"/> from dense [Rows, Cols] values, group by group: the scheme
    /// picks each group's scale and zero, the rounding is to nearest or stochastic (<see cref="QuantizeArgs"/>).</summary>
    void Quantize(in QuantView w, StridedView dense, in QuantizeArgs args);

    /// <summary>dense [Rows, Cols] = scale · (code − zero) of every value of <paramref name="w"/>.</summary>
    void Dequantize(in QuantView w, StridedView dense);

    /// <summary>With <paramref name="transposed"/>: y [batch, Rows] = x [batch, Cols] · Wᵀ (a linear layer's forward);
    /// otherwise y [batch, Cols] = x [batch, Rows] · W (its input gradient). Dequantization is fused into the
    /// product: no dense copy of W is made.</summary>
    void QuantMatMul(in QuantView w, bool transposed, StridedView x, StridedView y);

    // ---- user kernels ----

    /// <summary>Fills <paramref name="outputs"/> with the user kernel <paramref name="kernel"/> applied to
    /// <paramref name="inputs"/> and <paramref name="scalars"/> (every operand contiguous, of the dtypes and shapes its
    /// op declares and validated there): CUDA compiles its source and launches
    /// <c>entry(inputs..., outputs..., scalars...)</c> as <paramref name="launch"/> says (nothing when the grid is
    /// empty); the CPU runs its CPU function, which does not use <paramref name="launch"/>.</summary>
    void Custom(CustomKernel kernel, in LaunchConfig launch, IReadOnlyList<StridedView> inputs, IReadOnlyList<StridedView> outputs, IReadOnlyList<CustomScalar> scalars);
}

/// <summary>Distribution for <see cref="IBackend.Random"/>.</summary>
public enum RandomKind
{
    /// <summary>Uniform on [a, b).</summary>
    Uniform,
    /// <summary>Normal with mean a and standard deviation b.</summary>
    Normal,

}
