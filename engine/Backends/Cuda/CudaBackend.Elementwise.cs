namespace Frugal.Backends.Cuda;

internal sealed unsafe partial class CudaBackend
{
    private const string RandomKernels = "random.cu";
    private const string Optimizers = "optim.cu";

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

    /// <inheritdoc/>
    public void Adam8BitStep(StridedView param, StridedView grad, StridedView mCodes, StridedView mAbsmax, StridedView rCodes, StridedView rAbsmax, in AdamArgs args)
    {
        if (param.DType != DType.F32)
            throw new NotSupportedException($"cuda Adam8BitStep: 8-bit moments step F32 parameters, not {param.DType.Name()}");
        var s = args;
        Launch(Optimizers, "adam8bit_f32", mCodes.Shape[0], perRow: true, (ref KernelArgs k) =>
        {
            foreach (var pointer in new[] { param.Data, grad.Data, mCodes.Data, mAbsmax.Data, rCodes.Data, rAbsmax.Data })
                k.Add(pointer);
            k.Add(KernelAbi.Adam8BitFactors.From(s));
            k.Add(param.Numel);
            k.Add((long)mCodes.Shape[0]);
        });
    }

    /// <inheritdoc/>
    public void QuantAdam8BitStep(in QuantView weight, StridedView grad, StridedView mCodes, StridedView mAbsmax, StridedView rCodes, StridedView rAbsmax, in AdamArgs adam, in QuantizeArgs quantize)
    {
        weight.CheckGroupsDivide(Optim.Adam.StateBlock, "cuda QuantAdam8BitStep");
        var (w, s, q) = (weight, adam, quantize);
        Launch(Optimizers, "quant_adam8bit", mCodes.Shape[0], perRow: true, (ref KernelArgs k) =>
        {
            k.Add(w.Codes);
            k.Add(w.Scales);
            k.Add(KernelAbi.QuantShape.From(w));
            foreach (var pointer in new[] { grad.Data, mCodes.Data, mAbsmax.Data, rCodes.Data, rAbsmax.Data })
                k.Add(pointer);
            k.Add(KernelAbi.Adam8BitFactors.From(s));
            k.Add((int)q.Scheme);
            k.Add(q.Stochastic ? 1 : 0);
            k.Add(q.Seed);
            k.Add(q.Offset);
            k.Add((long)mCodes.Shape[0]);
        });
    }

    // ---- user kernels ----

    /// <inheritdoc/>
    /// <remarks>The source is compiled through the kernel cache as its own module.</remarks>
    public void Custom(CustomKernel kernel, in LaunchConfig launch, IReadOnlyList<StridedView> inputs, IReadOnlyList<StridedView> outputs, IReadOnlyList<CustomScalar> scalars)
    {
        var config = launch;
        Launch(kernel.Module, () => kernel.CudaSource, kernel.Entry, config.Grid.Count,
            (nint function, long _, in KernelArgs args, string _) => context.Launch(function, config, args, $"{kernel.Name}:{kernel.Entry}"),
            (ref KernelArgs k) =>
            {
                foreach (var operand in inputs.Concat(outputs))
                    k.Add(operand.Data);
                foreach (var s in scalars)
                {
                    switch (s.Type)
                    {
                        case CustomScalarType.I32: k.Add(s.AsInt32()); break;
                        case CustomScalarType.I64: k.Add(s.AsInt64()); break;
                        case CustomScalarType.F32: k.Add(s.AsSingle()); break;
                        default: k.Add(s.AsDouble()); break;
                    }
                }
            }, inputs.Count + outputs.Count + scalars.Count);
    }
}
