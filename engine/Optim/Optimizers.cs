using Frugal.Backends;

namespace Frugal.Optim;

/// <summary>Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay (PyTorch's SGD).</summary>
public sealed class SGD : Optimizer
{
    /// <summary>Creates the optimizer.</summary>
    public SGD(IEnumerable<Tensor> parameters, double lr, double momentum = 0, double dampening = 0, double weightDecay = 0, bool nesterov = false)
        : base(parameters, lr)
    {
        if (momentum < 0 || weightDecay < 0)
            throw new ArgumentOutOfRangeException(nameof(momentum), $"SGD: momentum {momentum} and weight decay {weightDecay} must be >= 0");
        if (nesterov && (momentum <= 0 || dampening != 0))
            throw new ArgumentException("SGD: Nesterov momentum requires momentum > 0 and zero dampening");
        (Momentum, Dampening, WeightDecay, Nesterov) = (momentum, dampening, weightDecay, nesterov);
    }

    /// <summary>Momentum factor.</summary>
    public double Momentum { get; }

    /// <summary>Dampening of the momentum.</summary>
    public double Dampening { get; }

    /// <summary>L2 penalty.</summary>
    public double WeightDecay { get; }

    /// <summary>Nesterov momentum.</summary>
    public bool Nesterov { get; }

    /// <inheritdoc/>
    protected override string? MomentumState => Momentum != 0 ? "momentum_buffer" : null;

    /// <inheritdoc/>
    protected override (Shape Shape, DType DType)? StateLayout(Shape values, string state)
        => state == "momentum_buffer" && Momentum != 0 ? (values, DType.F32) : null;

    /// <inheritdoc/>
    protected override IReadOnlyList<string> StateNames { get; } = ["momentum_buffer"];

    /// <inheritdoc/>
    protected override void Update(Tensor parameter, Tensor values, Tensor grad, long offset)
    {
        var first = false;
        using var buf = Momentum != 0 ? StateSlice(parameter, values, offset, "momentum_buffer", out first) : null;
        values.Backend.SgdStep(values.View, grad.View, buf?.View ?? default, new SgdArgs(Lr, Momentum, Dampening, WeightDecay, Nesterov, first));
    }
}

/// <summary>Adam (Kingma and Ba) with L2 weight decay added to the gradient, as PyTorch's Adam.</summary>
public class Adam : Optimizer
{
    /// <summary>Values per block of an 8-bit state, each block with its own F32 scale.</summary>
    public const int StateBlock = 2048;

    /// <summary>Tensors with fewer values keep 32-bit state even when 8-bit states are asked for.</summary>
    public const int MinQuantizedState = 4096;

    /// <summary>Creates the optimizer; <paramref name="stateBits"/> 8 stores both moments of every tensor of at least
    /// <see cref="MinQuantizedState"/> values in 8 bits (see <see cref="StateBits"/>).</summary>
    public Adam(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0, int stateBits = 32)
        : this(parameters, lr, beta1, beta2, eps, weightDecay, decoupled: false, stateBits, decay: null)
    {
    }

    /// <summary>Shared constructor of Adam and AdamW.</summary>
    protected Adam(IEnumerable<Tensor> parameters, double lr, double beta1, double beta2, double eps, double weightDecay, bool decoupled, int stateBits, Func<Tensor, bool>? decay)
        : base(parameters, lr)
    {
        Decay = decay;
        if (beta1 is < 0 or >= 1 || beta2 is < 0 or >= 1 || eps <= 0 || weightDecay < 0)
            throw new ArgumentOutOfRangeException(nameof(beta1), $"{GetType().Name}: invalid betas ({beta1}, {beta2}), eps {eps} or weight decay {weightDecay}");
        if (stateBits is not (32 or 8))
            throw new ArgumentOutOfRangeException(nameof(stateBits), $"{GetType().Name}: state bits are 32 or 8, got {stateBits}");
        (Beta1, Beta2, Eps, WeightDecay, Decoupled, StateBits) = (beta1, beta2, eps, weightDecay, decoupled, stateBits);
    }

    /// <summary>32, or 8: blockwise-quantized moments (blocks of <see cref="StateBlock"/> values, linear
    /// quantization against each block's absolute maximum): the first moment as signed codes, the second as unsigned
    /// codes of its fourth root (8 bits then span a 2³² range of v, and a code of 0 is read as half a step, so the
    /// update never divides by a rounded-away second moment), each block with an F32 scale; the step dequantizes into
    /// F32 Workspace, runs the Adam kernel and quantizes back (round to nearest).</summary>
    public int StateBits { get; }

    /// <summary>First-moment decay.</summary>
    public double Beta1 { get; }

    /// <summary>Second-moment decay.</summary>
    public double Beta2 { get; }

    /// <summary>Denominator epsilon.</summary>
    public double Eps { get; }

    /// <summary>Weight decay (L2 for Adam, decoupled for AdamW).</summary>
    public double WeightDecay { get; }

    /// <summary>True for AdamW's decoupled weight decay.</summary>
    public bool Decoupled { get; }

    /// <summary>Which parameters weight decay applies to (null: all), e.g. <see cref="MatricesOnly"/>.</summary>
    public Func<Tensor, bool>? Decay { get; }

    /// <summary>Decay for weight matrices, embeddings and kernels in any format (a sparse weight's stored values and
    /// low-rank factors too, whatever their tensor rank), not for biases and normalisation gains and shifts (rank 1
    /// tensors that are no layer's weight): the usual transformer recipe.</summary>
    public static bool MatricesOnly(Tensor parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        return parameter.OfWeight || parameter.GradShape.Rank >= 2;
    }

    /// <inheritdoc/>
    protected override string? MomentumState => "exp_avg";

    /// <inheritdoc/>
    protected override bool IsSecondMoment(string state) => state == "exp_avg_sq";

    /// <inheritdoc/>
    protected override IReadOnlyList<string> StateNames { get; } = ["exp_avg", "exp_avg_sq", .. QuantizedStates];

    /// <inheritdoc/>
    protected override (Shape Shape, DType DType)? StateLayout(Shape values, string state)
    {
        var blocks = (int)((values.Numel + StateBlock - 1) / StateBlock);
        var quantized = StateBits == 8 && values.Numel >= MinQuantizedState;
        return (state, quantized) switch
        {
            ("exp_avg" or "exp_avg_sq", false) => (values, DType.F32),
            ("exp_avg.codes", true) => (new Shape(blocks, StateBlock), DType.I8),
            ("exp_avg_sq.root4_codes", true) => (new Shape(blocks, StateBlock), DType.U8),
            ("exp_avg.absmax" or "exp_avg_sq.root4_absmax", true) => (new Shape(blocks, 1), DType.F32),
            _ => null,
        };
    }

    /// <inheritdoc/>
    protected override bool QuantizesState(Tensor parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        return StateBits == 8 && parameter.GradShape.Numel >= MinQuantizedState;
    }

    /// <inheritdoc/>
    protected override void Update(Tensor parameter, Tensor values, Tensor grad, long offset)
    {
        var args = ArgsFor(parameter);
        if (QuantizesState(parameter))
        {
            UpdateQuantized(parameter, values, grad, offset, args);
            return;
        }
        using var m = StateSlice(parameter, values, offset, "exp_avg", out _);
        using var v = StateSlice(parameter, values, offset, "exp_avg_sq", out _);
        values.Backend.AdamStep(values.View, grad.View, m.View, v.View, args);
    }

    private AdamArgs ArgsFor(Tensor parameter) => new(Lr, Beta1, Beta2, Eps, Decay is null || Decay(parameter) ? WeightDecay : 0, Decoupled, StepCount);

    /// <inheritdoc/>
    /// <remarks>With 8-bit moments and groups that divide <see cref="StateBlock"/>: the whole weight in one
    /// <see cref="Backends.IBackend.QuantAdam8BitStep"/>, the codes, scales and moments of the chunked path.</remarks>
    private protected override bool UpdatePackedInPlace(Tensor parameter, Formats.PackedWeight packed, Tensor grad)
    {
        if (!QuantizesState(parameter) || StateBlock % packed.Weight.Group != 0)
            return false;
        var (mc, ms, rc, rs) = QuantizedMoments(parameter);
        var args = ArgsFor(parameter);
        packed.UpdateInPlace((w, q) => grad.Backend.QuantAdam8BitStep(w, grad.View, mc.View, ms.View, rc.View, rs.View, args, q));
        return true;
    }

    /// <summary>The codes and block maxima of both moments of <paramref name="parameter"/>, created on its first step.</summary>
    private (Tensor MCodes, Tensor MAbsmax, Tensor RCodes, Tensor RAbsmax) QuantizedMoments(Tensor parameter)
    {
        var blocks = checked((int)((parameter.GradShape.Numel + StateBlock - 1) / StateBlock));
        var codes = new Shape(blocks, StateBlock);
        var scales = new Shape(blocks, 1);
        return (State(parameter, "exp_avg.codes", codes, DType.I8, out _), State(parameter, "exp_avg.absmax", scales, DType.F32, out _),
            State(parameter, "exp_avg_sq.root4_codes", codes, DType.U8, out _), State(parameter, "exp_avg_sq.root4_absmax", scales, DType.F32, out _));
    }

    /// <summary>The 8-bit step of values [offset, offset + n): one fused backend step over their blocks of both
    /// moments (<see cref="Backends.IBackend.Adam8BitStep"/>), which reads, steps and quantizes back each block
    /// without an F32 copy of the moments in device memory.</summary>
    private void UpdateQuantized(Tensor parameter, Tensor values, Tensor grad, long offset, in AdamArgs args)
    {
        var (mCodes, mScale, rCodes, rScale) = QuantizedMoments(parameter);
        if (offset % StateBlock != 0)
            throw new InvalidOperationException($"{GetType().Name}: an 8-bit update must start on a block of {StateBlock} values, not at {offset}");
        var (first, n) = ((int)(offset / StateBlock), checked((int)values.Numel));
        var count = (n + StateBlock - 1) / StateBlock;
        using var mc = mCodes.Narrow(0, first, count);
        using var ms = mScale.Narrow(0, first, count);
        using var rc = rCodes.Narrow(0, first, count);
        using var rs = rScale.Narrow(0, first, count);
        values.Backend.Adam8BitStep(values.View, grad.View, mc.View, ms.View, rc.View, rs.View, args);
    }

    private static readonly string[] QuantizedStates = ["exp_avg.codes", "exp_avg.absmax", "exp_avg_sq.root4_codes", "exp_avg_sq.root4_absmax"];
    private static readonly string[] FullStates = ["exp_avg", "exp_avg_sq"];

    /// <inheritdoc/>
    /// <remarks>With 8-bit states, where the parameter or the replacement holds quantized moments: both moments are
    /// read as the step reads them (dequantized a chunk of blocks at a time into F32 Workspace, the second moment
    /// from its fourth root with the floor of half a step), mapped by <paramref name="transform"/>, and stored as the
    /// replacement's first step would: quantized (round to nearest, scales re-estimated per block) in the layout of
    /// its size, or F32 when it has fewer than <see cref="MinQuantizedState"/> values. Each moment moves within half
    /// a quantization step of its new block; entries mapped from nothing get codes 0, as a fresh state.</remarks>
    protected override IReadOnlyCollection<string> MoveQuantizedState(Tensor parameter, Tensor replacement, Func<double[], bool, double[]> transform)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        ArgumentNullException.ThrowIfNull(replacement);
        var (from, to) = (QuantizesState(parameter), QuantizesState(replacement));
        if (!from && !to)
            return [];
        var names = from ? QuantizedStates : FullStates;
        if (names.Any(name => ExistingState(parameter, name) is null))
            return [];   // not stepped yet: the replacement's first step creates its state
        using var work = Memory.MemoryContext.Use(Memory.MemoryCategory.Workspace, $"{parameter.Name ?? "param"}.adam8bit.move");
        double[] Read(bool second)
        {
            if (!from)
                return StateValues(ExistingState(parameter, FullStates[second ? 1 : 0])!);
            var i = second ? 2 : 0;
            return ReadQuantized(ExistingState(parameter, QuantizedStates[i])!, ExistingState(parameter, QuantizedStates[i + 1])!, parameter.GradShape.Numel, second);
        }
        var m = Transformed(transform, Read(second: false), false, replacement);
        var v = Transformed(transform, Read(second: true), true, replacement);
        var same = ReferenceEquals(parameter, replacement);   // then the layout is the same: rewrite in place
        var born = same ? [] : names.Select(name => RemoveState(parameter, name)).ToArray();
        if (!to)
        {
            // As StateSlice creates them: one value per value, in the values' dtype.
            Fill(AddState(replacement, FullStates[0], replacement.GradShape, replacement.DType, born[0]), m);
            Fill(AddState(replacement, FullStates[1], replacement.GradShape, replacement.DType, born[^1]), v);
            return FullStates;
        }
        Tensor Target(int i)
        {
            if (same)
                return ExistingState(parameter, QuantizedStates[i])!;
            var (shape, dtype) = StateLayout(replacement.GradShape, QuantizedStates[i])!.Value;
            return AddState(replacement, QuantizedStates[i], shape, dtype, from ? born[i] : born[i / 2]);
        }
        WriteQuantized(m, Target(0), Target(1), secondMoment: false);
        WriteQuantized(v, Target(2), Target(3), secondMoment: true);
        return QuantizedStates;
    }

    /// <summary>Values a moved moment is read or written at a time: two state blocks, so a move needs about 100 KiB of
    /// F32 Workspace however large the tensor.</summary>
    private const int QuantizedChunkValues = 2 * StateBlock;

    /// <summary>The first <paramref name="count"/> values of a quantized moment as the step reads them, in float64,
    /// dequantized <see cref="QuantizedChunkValues"/> values at a time.</summary>
    private static double[] ReadQuantized(Tensor codes, Tensor absmax, long count, bool secondMoment)
    {
        var values = new double[count];
        for (var first = 0; first < codes.Shape[0]; first += QuantizedChunkValues / StateBlock)
        {
            var blocks = (int)Math.Min(QuantizedChunkValues / StateBlock, codes.Shape[0] - first);
            using var c = codes.Narrow(0, first, blocks);
            using var s = absmax.Narrow(0, first, blocks);
            using var x = secondMoment ? SecondMoment(c, s) : Dequantize(c, s, 127, floor: 0);
            var chunk = x.ToArray<float>();
            var start = (long)first * StateBlock;
            for (var i = 0; i < chunk.Length && start + i < count; i++)
                values[start + i] = chunk[i];
        }
        return values;
    }

    /// <summary>Quantizes <paramref name="values"/> into a moment's codes and block scales as the step does
    /// (<see cref="QuantizedChunkValues"/> values at a time through F32 Workspace; the padding of the last block is 0).</summary>
    private static void WriteQuantized(double[] values, Tensor codes, Tensor absmax, bool secondMoment)
    {
        for (var first = 0; first < codes.Shape[0]; first += QuantizedChunkValues / StateBlock)
        {
            var blocks = (int)Math.Min(QuantizedChunkValues / StateBlock, codes.Shape[0] - first);
            var start = (long)first * StateBlock;
            var chunk = new float[blocks * StateBlock];
            for (var i = 0; i < chunk.Length && start + i < values.Length; i++)
                chunk[i] = (float)(secondMoment ? Math.Max(values[start + i], 0) : values[start + i]);
            using var c = codes.Narrow(0, first, blocks);
            using var s = absmax.Narrow(0, first, blocks);
            using var x = Tensor.FromArray(chunk, new Shape(blocks, StateBlock), codes.Device);
            if (secondMoment)
                QuantizeSecondMoment(x, c, s);
            else
                Quantize(x, c, s, 127);
        }
    }

    /// <summary>Codes of v^¼ (against each block's maximum) from the second moment <paramref name="v"/> [blocks, 2048].</summary>
    private static void QuantizeSecondMoment(Tensor v, Tensor codes, Tensor absmax)
    {
        Tensor root4;
        using (var root2 = v.Sqrt())
            root4 = root2.Sqrt();
        using (root4)
            Quantize(root4, codes, absmax, 255);
    }

    /// <summary>v from its codes of v^¼ (a range of 2³² in 8 bits), read back at least half a step above zero, so a
    /// small second moment never becomes 0 under a first moment that did not.</summary>
    private static Tensor SecondMoment(Tensor codes, Tensor absmax)
    {
        using var r = Dequantize(codes, absmax, 255, floor: 0.5);
        using var r2 = r * r;
        return r2 * r2;
    }

    /// <summary>codes · absmax / levels, with codes below <paramref name="floor"/> read as the floor.</summary>
    private static Tensor Dequantize(Tensor codes, Tensor absmax, double levels, double floor)
    {
        using var raw = codes.To(DType.F32);
        using var least = Tensor.Full(new Shape(), floor, DType.F32, codes.Device);
        using var values = floor > 0 ? F.Maximum(raw, least) : raw.Alias();
        using var step = absmax.Mul(1 / levels);
        return values * step;
    }

    /// <summary>codes = round(x · (levels / absmax)) per block (saturating), absmax = max |x| of the block.</summary>
    private static void Quantize(Tensor x, Tensor codes, Tensor absmax, double levels)
    {
        using var abs = x.Abs();
        using var max = F.Max(abs, [1], keepDim: true);
        using var tiny = Tensor.Full(new Shape(), 1e-30, DType.F32, x.Device);
        using var safe = F.Maximum(max, tiny);
        using var top = Tensor.Full(new Shape(), levels, DType.F32, x.Device);
        using var factor = top / safe;
        using var levelled = x * factor;
        using var q = levelled.To(codes.DType);
        F.CopyInto(codes, q);
        F.CopyInto(absmax, max);
    }
}

/// <summary>AdamW (Loshchilov and Hutter): Adam with decoupled weight decay p ← p·(1 - lr·wd).</summary>
public sealed class AdamW : Adam
{
    /// <summary>Creates the optimizer (PyTorch's default weight decay 0.01); <paramref name="stateBits"/> as Adam's;
    /// <paramref name="decay"/> picks the parameters that decay (null: all; <see cref="Adam.MatricesOnly"/> spares
    /// biases and normalisation parameters).</summary>
    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01, int stateBits = 32, Func<Tensor, bool>? decay = null)
        : base(parameters, lr, beta1, beta2, eps, weightDecay, decoupled: true, stateBits, decay)
    {
    }
}
