using Frugal.Backends.Cuda.Native;
using Frugal.Memory;

namespace Frugal.Backends.Cuda;

/// <summary>The CUDA kernel table: every entry of <see cref="IBackend"/> as NVRTC-compiled kernels of
/// <c>kernels/*.cu</c> (elementwise, random, optimizer, row, reduction, indexing, cast, convolution, pooling and
/// CSR kernels) and cuBLAS for GEMM, with the CPU backend's semantics (same Philox stream, same rounding, sums in the
/// CPU's order wherever one thread owns an output). Every operation is queued on the device's stream;
/// <see cref="Download"/> (and <see cref="Upload"/>, whose source may die on return) synchronise.</summary>
internal sealed unsafe class CudaBackend(CudaContext context, Allocator allocator) : IBackend
{
    private const string Elementwise = "elementwise.cu";
    private const string RandomKernels = "random.cu";
    private const string Optimizers = "optim.cu";
    private const string Rows = "rows.cu";
    private const string Reductions = "reduce.cu";
    private const string Indexing = "indexing.cu";
    private const string Casts = "cast.cu";
    private const string Convolution = "conv.cu";
    private const string Sparse = "sparse.cu";
    private const string Quant = "quant.cu";

    // im2col columns per chunk of images: 32M values (128 MiB in F32) keep cuBLAS's products large.
    private const long ColumnBudgetElements = 32L << 20;

    /// <inheritdoc/>
    public string Name => $"cuda:{context.Ordinal}";

    // ---- memory ----

    /// <inheritdoc/>
    public void Upload(ReadOnlySpan<byte> src, nint dst)
    {
        context.MakeCurrent();
        fixed (byte* p = src)
            Driver.Check(Driver.MemcpyHtoDAsync(dst, p, (nuint)src.Length, context.Stream), "cuMemcpyHtoDAsync_v2");
        // A pageable source is staged before the call returns, but the caller's span may die now: wait.
        context.Synchronize();
    }

    /// <inheritdoc/>
    public void Download(nint src, Span<byte> dst)
    {
        context.MakeCurrent();
        fixed (byte* p = dst)
            Driver.Check(Driver.MemcpyDtoHAsync(p, src, (nuint)dst.Length, context.Stream), "cuMemcpyDtoHAsync_v2");
        context.Synchronize();
    }

    /// <inheritdoc/>
    public void Copy(StridedView src, StridedView dst)
    {
        var suffix = BitsSuffix(src.DType);
        Run($"copy_strided_{suffix}", dst.Numel, (ref KernelArgs a) =>
        {
            a.Add(src.Data);
            a.Add(KernelAbi.Strided.From(src, "copy source"));
            a.Add(dst.Data);
            a.Add(KernelAbi.Strided.From(dst, "copy destination"));
            a.Add(dst.Numel);
        });
    }

    /// <inheritdoc/>
    public void Fill(StridedView dst, double value)
    {
        var bits = Bits(dst.DType, value);
        var suffix = BitsSuffix(dst.DType);
        Run($"fill_{suffix}", dst.Numel, (ref KernelArgs a) =>
        {
            a.Add(dst.Data);
            a.Add(KernelAbi.Strided.From(dst, "fill destination"));
            switch (dst.DType.SizeOf())
            {
                case 1: a.Add((byte)bits); break;
                case 2: a.Add((ushort)bits); break;
                case 4: a.Add((uint)bits); break;
                default: a.Add(bits); break;
            }
            a.Add(dst.Numel);
        });
    }

    // ---- elementwise ----

    /// <inheritdoc/>
    public void Unary(UnaryOp op, StridedView x, StridedView y, double alpha)
        => Run($"unary_{FloatSuffix("Unary", x.DType)}", y.Numel, (ref KernelArgs a) =>
        {
            a.Add((int)op);
            a.Add(x.Data);
            a.Add(KernelAbi.Strided.From(x, "x"));
            a.Add(y.Data);
            AddScalar(ref a, x.DType, alpha);
            a.Add(y.Numel);
        });

    /// <inheritdoc/>
    public void UnaryBackward(UnaryOp op, StridedView x, StridedView y, StridedView dy, StridedView dx, double alpha)
        => Run($"unary_backward_{FloatSuffix("UnaryBackward", dy.DType)}", dx.Numel, (ref KernelArgs a) =>
        {
            a.Add((int)op);
            a.Add(x.Data);
            a.Add(y.Data);
            a.Add(dy.Data);
            a.Add(dx.Data);
            AddScalar(ref a, dy.DType, alpha);
            a.Add(dx.Numel);
        });

    /// <inheritdoc/>
    public void Binary(BinaryOp op, StridedView a, StridedView b, StridedView y)
        => Run($"{(op.IsComparison() ? "compare" : "binary")}_{FloatSuffix("Binary", a.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add((int)op);
            k.Add(a.Data);
            k.Add(KernelAbi.Strided.From(a, "a"));
            k.Add(b.Data);
            k.Add(KernelAbi.Strided.From(b, "b"));
            k.Add(y.Data);
            k.Add(y.Numel);
        });

    /// <inheritdoc/>
    public void Where(StridedView cond, StridedView a, StridedView b, StridedView y)
        => Run($"where_{FloatSuffix("Where", a.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(cond.Data);
            k.Add(KernelAbi.Strided.From(cond, "cond"));
            k.Add(a.Data);
            k.Add(KernelAbi.Strided.From(a, "a"));
            k.Add(b.Data);
            k.Add(KernelAbi.Strided.From(b, "b"));
            k.Add(y.Data);
            k.Add(y.Numel);
        });

    /// <inheritdoc/>
    public void Cast(StridedView src, StridedView dst)
        => Run(Casts, "cast", dst.Numel, (ref KernelArgs k) =>
        {
            k.Add(src.Data);
            k.Add((int)src.DType);
            k.Add(dst.Data);
            k.Add((int)dst.DType);
            k.Add(dst.Numel);
        });

    // ---- reductions ----

    /// <inheritdoc/>
    public void Reduce(ReduceOp op, StridedView x, int[] axes, StridedView y)
    {
        var kept = Enumerable.Range(0, x.Rank).Where(d => !axes.Contains(d)).ToArray();
        var keptView = Select(x, kept);
        var reducedView = Select(x, axes);
        // A thread per output when there are many; a block per output when few outputs each reduce many values.
        var perBlock = y.Numel < 4096 && reducedView.Numel >= 1024;
        Launch(Reductions, $"{(perBlock ? "reduce_blocks" : "reduce")}_{FloatSuffix("Reduce", x.DType)}", y.Numel, perBlock, (ref KernelArgs k) =>
        {
            k.Add((int)op);
            k.Add(x.Data);
            k.Add(KernelAbi.Strided.From(keptView, "kept axes of x"));
            k.Add(KernelAbi.Strided.From(reducedView, "reduced axes of x"));
            k.Add(reducedView.Numel);
            k.Add(y.Data);
            k.Add(y.Numel);
        });
    }

    /// <inheritdoc/>
    public void ArgMax(StridedView x, int axis, StridedView y)
    {
        var keptView = Select(x, [.. Enumerable.Range(0, x.Rank).Where(d => d != axis)]);
        Run(Reductions, $"argmax_{FloatSuffix("ArgMax", x.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(KernelAbi.Strided.From(keptView, "kept axes of x"));
            k.Add((long)x.Shape[axis]);
            k.Add((long)x.Strides[axis]);
            k.Add(y.Data);
            k.Add(y.Numel);
        });
    }

    /// <summary>The axes <paramref name="axes"/> of <paramref name="v"/>, in that order, as a view (same data).</summary>
    private static StridedView Select(StridedView v, int[] axes)
        => new(v.Data, v.DType, [.. axes.Select(d => v.Shape[d])], [.. axes.Select(d => v.Strides[d])]);

    // ---- rows: softmax, cross-entropy, layer normalisation ----

    /// <inheritdoc/>
    public void Softmax(StridedView x, StridedView y, bool log)
        => RunRows($"softmax_{FloatSuffix("Softmax", x.DType)}", x, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(y.Data);
            AddRowsCols(ref k, x);
            k.Add(log ? 1 : 0);
        });

    /// <inheritdoc/>
    public void SoftmaxBackward(StridedView y, StridedView dy, StridedView dx, bool log)
        => RunRows($"softmax_backward_{FloatSuffix("SoftmaxBackward", y.DType)}", y, (ref KernelArgs k) =>
        {
            k.Add(y.Data);
            k.Add(dy.Data);
            k.Add(dx.Data);
            AddRowsCols(ref k, y);
            k.Add(log ? 1 : 0);
        });

    /// <inheritdoc/>
    public void CrossEntropy(StridedView logits, StridedView targets, StridedView loss, int ignoreIndex)
        => RunRows($"cross_entropy_{FloatSuffix("CrossEntropy", logits.DType)}", logits, (ref KernelArgs k) =>
        {
            k.Add(logits.Data);
            k.Add(targets.Data);
            k.Add(loss.Data);
            AddRowsCols(ref k, logits);
            k.Add(ignoreIndex);
        });

    /// <inheritdoc/>
    public void CrossEntropyBackward(StridedView logits, StridedView targets, StridedView dloss, StridedView dlogits, int ignoreIndex)
        => RunRows($"cross_entropy_backward_{FloatSuffix("CrossEntropyBackward", logits.DType)}", logits, (ref KernelArgs k) =>
        {
            k.Add(logits.Data);
            k.Add(targets.Data);
            k.Add(dloss.Data);
            k.Add(dlogits.Data);
            AddRowsCols(ref k, logits);
            k.Add(ignoreIndex);
        });

    /// <inheritdoc/>
    public void LayerNorm(StridedView x, StridedView gamma, StridedView beta, double eps, StridedView y, StridedView mean, StridedView rstd)
        => RunRows($"layernorm_{FloatSuffix("LayerNorm", x.DType)}", x, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(gamma.Data);
            k.Add(beta.Data);
            AddScalar(ref k, x.DType, eps);
            k.Add(y.Data);
            k.Add(mean.Data);
            k.Add(rstd.Data);
            AddRowsCols(ref k, x);
        });

    /// <inheritdoc/>
    public void LayerNormBackward(StridedView x, StridedView gamma, StridedView mean, StridedView rstd, StridedView dy, StridedView dx, StridedView dgamma, StridedView dbeta)
    {
        var suffix = FloatSuffix("LayerNormBackward", x.DType);
        RunRows($"layernorm_backward_input_{suffix}", x, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(gamma.Data);
            k.Add(mean.Data);
            k.Add(rstd.Data);
            k.Add(dy.Data);
            k.Add(dx.Data);
            AddRowsCols(ref k, x);
        });
        if (dgamma.Data == 0 && dbeta.Data == 0)
            return;
        Run(Rows, $"layernorm_backward_params_{suffix}", x.Shape[1], (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(mean.Data);
            k.Add(rstd.Data);
            k.Add(dy.Data);
            k.Add(dgamma.Data);
            k.Add(dbeta.Data);
            AddRowsCols(ref k, x);
        });
    }

    // ---- indexing ----

    /// <inheritdoc/>
    public void IndexSelect(StridedView src, int axis, StridedView index, StridedView dst)
    {
        var (_, inner) = src.AroundAxis(axis);
        Run(Indexing, "index_select_bytes", dst.Numel, (ref KernelArgs k) =>
        {
            k.Add(src.Data);
            k.Add(index.Data);
            k.Add(dst.Data);
            k.Add((long)index.Shape[0]);
            k.Add((long)src.Shape[axis]);
            k.Add(inner);
            k.Add((long)src.DType.SizeOf());
            k.Add(dst.Numel);
        });
    }

    /// <inheritdoc/>
    public void IndexAdd(StridedView src, int axis, StridedView index, StridedView dst)
    {
        var (outer, inner) = dst.AroundAxis(axis);
        Run(Indexing, $"index_add_{FloatSuffix("IndexAdd", src.DType)}", outer * inner, (ref KernelArgs k) =>
        {
            k.Add(src.Data);
            k.Add(index.Data);
            k.Add(dst.Data);
            k.Add(outer);
            k.Add((long)index.Shape[0]);
            k.Add((long)dst.Shape[axis]);
            k.Add(inner);
        });
    }


    // ---- convolution (im2col + cuBLAS) and pooling ----

    /// <inheritdoc/>
    public void Conv2d(in Conv2dArgs args, StridedView x, StridedView w, StridedView bias, StridedView y)
    {
        var (a, t) = (args, x.DType);
        var (s, g, size) = (FloatSuffix("Conv2d", t), KernelAbi.Window.From(a), t.SizeOf());
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        ConvChunks.Run(allocator, a, size, ColumnBudgetElements, "conv2d.output", (n0, b, cols, o) =>
        {
            Im2Col(s, g, x, n0, b, cols);
            Gemm(new GemmArgs(false, false, 1, a.OutC, b * ohw, ckk, 1, ckk, 0, b * ohw, 0, 0, b * ohw, 0), t, w.Data, cols, o);
            Run(Convolution, $"conv_output_{s}", (long)b * a.OutC * ohw, (ref KernelArgs k) =>
            {
                k.Add(o);
                k.Add(bias.Data);
                k.Add(g);
                k.Add(n0);
                k.Add(b);
                k.Add(y.Data);
            });
        });
    }

    /// <inheritdoc/>
    public void Conv2dBackwardInput(in Conv2dArgs args, StridedView dy, StridedView w, StridedView dx)
    {
        var (a, t) = (args, dy.DType);
        var (s, g, size) = (FloatSuffix("Conv2dBackwardInput", t), KernelAbi.Window.From(a), t.SizeOf());
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        ConvChunks.Run(allocator, a, size, ColumnBudgetElements, "conv2d.grad", (n0, b, cols, gathered) =>
        {
            GatherGrad(s, g, dy, n0, b, gathered);
            Gemm(new GemmArgs(true, false, 1, ckk, b * ohw, a.OutC, 1, ckk, 0, b * ohw, 0, 0, b * ohw, 0), t, w.Data, gathered, cols);
            Col2Im(s, g, cols, n0, b, dx);
        });
    }

    /// <inheritdoc/>
    public void Im2Col(in Conv2dArgs args, StridedView x, int n0, int images, StridedView cols)
        => Im2Col(FloatSuffix("Im2Col", x.DType), KernelAbi.Window.From(args), x, n0, images, cols.Data);

    /// <inheritdoc/>
    public void Col2Im(in Conv2dArgs args, StridedView cols, int n0, int images, StridedView dx)
        => Col2Im(FloatSuffix("Col2Im", cols.DType), KernelAbi.Window.From(args), cols.Data, n0, images, dx);

    private void Col2Im(string suffix, KernelAbi.Window g, nint cols, int n0, int b, StridedView dx)
        => Run(Convolution, $"col2im_{suffix}", (long)b * g.C * g.H * g.W, (ref KernelArgs k) =>
        {
            k.Add(cols);
            k.Add(g);
            k.Add(b);
            k.Add(dx.Data + (nint)((long)n0 * g.C * g.H * g.W * dx.DType.SizeOf()));
        });

    /// <inheritdoc/>
    public void Conv2dBackwardWeight(in Conv2dArgs args, StridedView x, StridedView dy, StridedView dw, StridedView dbias)
    {
        var (a, t) = (args, x.DType);
        var (s, g, size) = (FloatSuffix("Conv2dBackwardWeight", t), KernelAbi.Window.From(a), t.SizeOf());
        int ckk = a.C * a.KH * a.KW, ohw = a.OutH * a.OutW;
        ConvChunks.Run(allocator, a, size, ColumnBudgetElements, "conv2d.grad", (n0, b, cols, gathered) =>
        {
            GatherGrad(s, g, dy, n0, b, gathered);
            Im2Col(s, g, x, n0, b, cols);
            Gemm(new GemmArgs(false, true, 1, a.OutC, ckk, b * ohw, 1, b * ohw, 0, b * ohw, 0, n0 == 0 ? 0 : 1, ckk, 0), t, gathered, cols, dw.Data);
            if (dbias.Data != 0)
            {
                Run(Convolution, $"bias_grad_{s}", a.OutC, (ref KernelArgs k) =>
                {
                    k.Add(gathered);
                    k.Add((long)b * ohw);
                    k.Add(a.OutC);
                    k.Add(n0 == 0 ? 0 : 1);
                    k.Add(dbias.Data);
                });
            }
        });
    }

    private void Im2Col(string suffix, KernelAbi.Window g, StridedView x, int n0, int b, nint cols)
        => Run(Convolution, $"im2col_{suffix}", (long)g.C * g.KH * g.KW * b * g.OutH * g.OutW, (ref KernelArgs k) =>
        {
            k.Add(x.Data + (nint)((long)n0 * g.C * g.H * g.W * x.DType.SizeOf()));
            k.Add(g);
            k.Add(b);
            k.Add(cols);
        });

    private void GatherGrad(string suffix, KernelAbi.Window g, StridedView dy, int n0, int b, nint gathered)
        => Run(Convolution, $"gather_grad_{suffix}", (long)b * g.OutC * g.OutH * g.OutW, (ref KernelArgs k) =>
        {
            k.Add(dy.Data);
            k.Add(g);
            k.Add(n0);
            k.Add(b);
            k.Add(gathered);
        });

    /// <inheritdoc/>
    public void MaxPool2d(in Pool2dArgs args, StridedView x, StridedView y, StridedView argmax)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"maxpool_{FloatSuffix("MaxPool2d", x.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(g);
            k.Add(y.Data);
            k.Add(argmax.Data);
        });
    }

    /// <inheritdoc/>
    public void MaxPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView argmax, StridedView dx)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"maxpool_backward_{FloatSuffix("MaxPool2dBackward", dy.DType)}", (long)args.N * args.C, (ref KernelArgs k) =>
        {
            k.Add(dy.Data);
            k.Add(argmax.Data);
            k.Add(g);
            k.Add(dx.Data);
        });
    }

    /// <inheritdoc/>
    public void AvgPool2d(in Pool2dArgs args, StridedView x, StridedView y)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"avgpool_{FloatSuffix("AvgPool2d", x.DType)}", y.Numel, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add(g);
            k.Add(y.Data);
        });
    }

    /// <inheritdoc/>
    public void AvgPool2dBackward(in Pool2dArgs args, StridedView dy, StridedView dx)
    {
        var g = KernelAbi.Window.From(args);
        Run(Convolution, $"avgpool_backward_{FloatSuffix("AvgPool2dBackward", dy.DType)}", (long)args.N * args.C, (ref KernelArgs k) =>
        {
            k.Add(dy.Data);
            k.Add(g);
            k.Add(dx.Data);
        });
    }

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

    // ---- randomness (the CPU's Philox stream) ----

    /// <inheritdoc/>
    public void Random(StridedView dst, RandomKind kind, double a, double b, ulong seed, ulong offset)
        => Run(RandomKernels, $"random_{FloatSuffix("Random", dst.DType)}", dst.Numel, (ref KernelArgs k) =>
        {
            k.Add(dst.Data);
            k.Add(kind == RandomKind.Normal ? 1 : 0);
            k.Add(a);
            k.Add(b);
            k.Add(seed);
            k.Add(offset);
            k.Add(dst.Numel);
        });

    /// <inheritdoc/>
    public void Dropout(StridedView x, double p, ulong seed, ulong offset, StridedView y, StridedView mask)
        => Run(RandomKernels, $"dropout_{FloatSuffix("Dropout", x.DType)}", x.Numel, (ref KernelArgs k) =>
        {
            k.Add(x.Data);
            k.Add((float)p);
            AddScalar(ref k, x.DType, 1.0 / (1.0 - p));
            k.Add(seed);
            k.Add(offset);
            k.Add(y.Data);
            k.Add(mask.Data);
            k.Add(x.Numel);
        });

    // ---- optimizers ----

    /// <inheritdoc/>
    public void SgdStep(StridedView param, StridedView grad, StridedView momentum, in SgdArgs args)
    {
        var s = args;
        var t = param.DType;
        Run(Optimizers, $"sgd_{FloatSuffix("SgdStep", t)}", param.Numel, (ref KernelArgs k) =>
        {
            k.Add(param.Data);
            k.Add(grad.Data);
            k.Add(momentum.Data);
            AddScalar(ref k, t, s.Lr);
            AddScalar(ref k, t, s.Momentum);
            AddScalar(ref k, t, 1 - s.Dampening);
            AddScalar(ref k, t, s.WeightDecay);
            k.Add(s.Momentum != 0 ? 1 : 0);
            k.Add(s.FirstStep ? 1 : 0);
            k.Add(s.Nesterov ? 1 : 0);
            k.Add(param.Numel);
        });
    }

    /// <inheritdoc/>
    public void AdamStep(StridedView param, StridedView grad, StridedView m, StridedView v, in AdamArgs args)
    {
        var s = args;
        var t = param.DType;
        Run(Optimizers, $"adam_{FloatSuffix("AdamStep", t)}", param.Numel, (ref KernelArgs k) =>
        {
            k.Add(param.Data);
            k.Add(grad.Data);
            k.Add(m.Data);
            k.Add(v.Data);
            // The same factors, computed in double on the host, as the CPU kernel uses.
            foreach (var factor in new[]
            {
                s.Lr, s.Beta1, s.Beta2, 1 - s.Beta1, 1 - s.Beta2, s.Eps, s.WeightDecay,
                1 / (1 - Math.Pow(s.Beta1, s.Step)), 1 / Math.Sqrt(1 - Math.Pow(s.Beta2, s.Step)), 1 - s.Lr * s.WeightDecay,
            })
                AddScalar(ref k, t, factor);
            k.Add(s.Decoupled ? 1 : 0);
            k.Add(param.Numel);
        });
    }

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

    // ---- packed low-bit weights ----

    /// <inheritdoc/>
    public void Quantize(in QuantView w, StridedView dense, in QuantizeArgs args)
    {
        var (q, a, shape) = (w, args, KernelAbi.QuantShape.From(w));
        Run(Quant, "quant_scales", q.Groups, (ref KernelArgs k) =>
        {
            k.Add(dense.Data);
            k.Add(q.Scales);
            k.Add(shape);
            k.Add((int)a.Scheme);
        });
        Run(Quant, "quant_codes", q.CodeBytes, (ref KernelArgs k) =>
        {
            k.Add(dense.Data);
            k.Add(q.Scales);
            k.Add(q.Codes);
            k.Add(shape);
            k.Add((int)a.Scheme);
            k.Add(a.Stochastic ? 1 : 0);
            k.Add(a.Seed);
            k.Add(a.Offset);
        });
    }

    /// <inheritdoc/>
    public void Dequantize(in QuantView w, StridedView dense)
    {
        var (q, shape) = (w, KernelAbi.QuantShape.From(w));
        Run(Quant, "quant_dequantize", q.Count, (ref KernelArgs k) =>
        {
            k.Add(q.Codes);
            k.Add(q.Scales);
            k.Add(dense.Data);
            k.Add(shape);
        });
    }

    /// <inheritdoc/>
    public void QuantMatMul(in QuantView w, bool transposed, StridedView x, StridedView y)
    {
        const int Tile = 16;
        var (q, shape, batch) = (w, KernelAbi.QuantShape.From(w), (long)x.Shape[0]);
        var outputs = transposed ? q.Rows : q.Cols;
        var tiles = (batch + Tile - 1) / Tile * ((outputs + Tile - 1) / Tile);
        Launch(Quant, "quant_matmul", tiles, perRow: true, (ref KernelArgs k) =>
        {
            k.Add(q.Codes);
            k.Add(q.Scales);
            k.Add(x.Data);
            k.Add(y.Data);
            k.Add(shape);
            k.Add(transposed ? 1 : 0);
            k.Add(batch);
        });
    }

    // ---- user kernels (CustomOp) ----

    /// <summary>Runs the user kernel <paramref name="entry"/> of <paramref name="source"/> (named
    /// <paramref name="name"/> in the cache) as <c>entry(in0, ..., inK, out, n)</c>, one thread per element.</summary>
    public void LaunchCustom(string name, string source, string entry, int threads, IReadOnlyList<nint> inputs, nint output, long n)
    {
        if (n == 0)
            return;
        context.MakeCurrent();
        var function = context.Function($"custom/{name}", () => source, entry);
        var storage = stackalloc byte[1024];
        var pointers = stackalloc void*[24];
        var args = new KernelArgs(storage, 1024, pointers, 24);
        foreach (var input in inputs)
            args.Add(input);
        args.Add(output);
        args.Add(n);
        context.LaunchPerElement(function, n, threads, args, $"{name}:{entry}");
    }

    // ---- helpers ----

    private delegate void ArgWriter(ref KernelArgs args);

    private void Run(string entry, long elements, ArgWriter write) => Run(Elementwise, entry, elements, write);

    private void Run(string file, string entry, long elements, ArgWriter write) => Launch(file, entry, elements, perRow: false, write);

    private void RunRows(string entry, StridedView rowsByCols, ArgWriter write) => Launch(Rows, entry, rowsByCols.Shape[0], perRow: true, write);

    /// <summary>Packs the arguments and launches <paramref name="entry"/> of <paramref name="file"/> over
    /// <paramref name="count"/> elements (grid-stride) or rows (a block per row).</summary>
    private void Launch(string file, string entry, long count, bool perRow, ArgWriter write)
    {
        if (count == 0)
            return;
        context.MakeCurrent();
        var function = context.Function(file, entry);
        var storage = stackalloc byte[1024];
        var pointers = stackalloc void*[24];
        var args = new KernelArgs(storage, 1024, pointers, 24);
        write(ref args);
        if (perRow)
            context.LaunchRows(function, count, args, entry);
        else
            context.Launch(function, count, args, entry);
    }

    private static void AddRowsCols(ref KernelArgs args, StridedView rowsByCols)
    {
        args.Add((long)rowsByCols.Shape[0]);
        args.Add((long)rowsByCols.Shape[1]);
    }

    private static void AddScalar(ref KernelArgs args, DType dtype, double value)
    {
        if (dtype == DType.F32)
            args.Add((float)value);
        else
            args.Add(value);
    }

    /// <summary>The bit pattern of <paramref name="value"/> stored as <paramref name="dtype"/>, in the low bytes.</summary>
    private static ulong Bits(DType dtype, double value)
    {
        ulong bits = 0;
        DTypeCodec.Write((byte*)&bits, dtype, 0, value);
        return bits;
    }

    private static string BitsSuffix(DType dtype) => $"b{dtype.SizeOf()}";

    private string FloatSuffix(string kernel, DType dtype) => dtype switch
    {
        DType.F32 => "f32",
        DType.F64 => "f64",
        _ => throw new NotSupportedException($"{Name} {kernel}: dtype {dtype.Name()} is a storage type; compute in f32 or f64"),
    };
}
