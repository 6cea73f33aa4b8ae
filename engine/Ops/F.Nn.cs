using Frugal.Backends;
using Frugal.Memory;

namespace Frugal;

public static partial class F
{
    private static Tensor Rows(Tensor x, string op)
    {
        Check.Float(op, x);
        if (x.Rank < 1)
            throw new ShapeMismatchException($"{op}: needs rank >= 1, got {x.Describe()}");
        return x.IsContiguous ? x.Alias() : x.Contiguous();
    }

    private static StridedView As2d(StridedView v, int cols) => v with { Shape = [cols == 0 ? 0 : (int)(v.Numel / cols), cols], Strides = [cols, 1] };

    private static Tensor SoftmaxCore(Tensor x, int dim, bool log)
    {
        var name = log ? "LogSoftmax" : "Softmax";
        var d = x.Shape.Normalize(dim);
        if (d != x.Rank - 1)
        {
            using var moved = Transpose(x, d, -1);
            using var r = SoftmaxCore(moved, -1, log);
            using var back = Transpose(r, d, -1);
            return Contiguous(back);
        }
        using var xc = Rows(x, name);
        var cols = x.Shape[-1];
        var y = NewLike(x.Shape, x);
        x.Backend.Softmax(As2d(xc.View, cols), As2d(y.View, cols), log);
        var node = Autograd.Record(y, name, x);
        if (node is not null)
        {
            var sy = node.Save(y);
            node.Backward = g =>
            {
                using var gc = g.Contiguous();
                var dx = NewLike(x.Shape, x);
                g.Backend.SoftmaxBackward(As2d(sy.View, cols), As2d(gc.View, cols), As2d(dx.View, cols), log);
                return [dx];
            };
        }
        return y;
    }

    /// <summary>Softmax along <paramref name="dim"/>.</summary>
    public static Tensor Softmax(Tensor x, int dim = -1) => SoftmaxCore(x, dim, log: false);

    /// <summary>Log-softmax along <paramref name="dim"/> (stable).</summary>
    public static Tensor LogSoftmax(Tensor x, int dim = -1) => SoftmaxCore(x, dim, log: true);

    /// <summary>Fused softmax cross-entropy of logits [N, C] against I32 class targets [N], averaged over the rows
    /// whose target is not <paramref name="ignoreIndex"/> (PyTorch's CrossEntropyLoss, reduction mean).</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex = -100)
    {
        Check.Float("CrossEntropy", logits);
        Check.Index("CrossEntropy", targets);
        Check.SameDevice("CrossEntropy", logits, targets);
        var rows = logits.Shape[0];
        var counted = ClassTargets("CrossEntropy", logits, targets, ignoreIndex).Count(v => v != ignoreIndex);
        using var lc = Rows(logits, "CrossEntropy");
        using var tc = targets.Contiguous();
        using var perRow = NewLike(new Shape(rows), logits);
        logits.Backend.CrossEntropy(lc.View, tc.View, perRow.View, ignoreIndex);
        Tensor loss;
        using (Autograd.NoGrad())
        {
            using var total = Sum(perRow);
            loss = total.Mul(1.0 / Math.Max(counted, 1));
        }
        var node = Autograd.Record(loss, "CrossEntropy", logits);
        if (node is not null)
        {
            var sl = node.Save(lc);
            var st = node.Save(tc);
            node.Backward = g =>
            {
                var scale = g.Item() / Math.Max(counted, 1);
                using var dl = Tensor.Full(new Shape(rows), scale, logits.DType, logits.Device, MemoryContext.Category, MemoryContext.Owner);
                var dx = NewLike(logits.Shape, logits);
                g.Backend.CrossEntropyBackward(sl.View, st.View, dl.View, dx.View, ignoreIndex);
                return [dx];
            };
        }
        return loss;
    }

    /// <summary>The class targets [N] of scores [N, C] (rank, length, range checked; <paramref name="ignoreIndex"/>
    /// allowed), read to the host.</summary>
    private static int[] ClassTargets(string op, Tensor scores, Tensor targets, int ignoreIndex)
    {
        if (scores.Rank != 2 || targets.Rank != 1 || targets.Shape[0] != scores.Shape[0])
            throw new ShapeMismatchException($"{op}: expects scores [N, C] and targets [N], got {scores.Describe()} and {targets.Describe()}");
        var classes = scores.Shape[1];
        var t = targets.ToArray<int>();
        foreach (var v in t)
        {
            if (v != ignoreIndex && (v < 0 || v >= classes))
                throw new ArgumentOutOfRangeException(nameof(targets), $"{op}: target {v} is outside [0, {classes}) for {scores.Describe()}");
        }
        return t;
    }

    /// <summary>Negative log-likelihood of log-probabilities [N, C] (e.g. <see cref="LogSoftmax"/>'s) at I32 class
    /// targets [N], averaged over the rows whose target is not <paramref name="ignoreIndex"/> (PyTorch's NLLLoss,
    /// reduction mean): <c>-Σᵢ logp[i, tᵢ] / n</c>.</summary>
    /// <exception cref="ShapeMismatchException">The shapes do not fit.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A target is outside [0, C) and not ignored.</exception>
    public static Tensor NllLoss(Tensor logProbs, Tensor targets, int ignoreIndex = -100)
    {
        Check.Float("NllLoss", logProbs);
        Check.Index("NllLoss", targets);
        Check.SameDevice("NllLoss", logProbs, targets);
        var t = ClassTargets("NllLoss", logProbs, targets, ignoreIndex);
        var classes = logProbs.Shape[1];
        var scale = -1.0 / Math.Max(t.Count(v => v != ignoreIndex), 1);
        // The picking weights: -1/n at (i, tᵢ), 0 elsewhere; a constant, so the product's gradient is the weight.
        var picks = new double[t.Length * classes];
        for (var i = 0; i < t.Length; i++)
        {
            if (t[i] != ignoreIndex)
                picks[i * classes + t[i]] = scale;
        }
        using var host = Tensor.FromArray(picks, logProbs.Shape, logProbs.Device);
        using var weights = host.To(logProbs.DType);
        using var picked = logProbs * weights;
        return Sum(picked);
    }

    /// <summary>Checks that a loss's two operands are alike (dtype, device) and of one shape.</summary>
    private static void SameShape(string op, (string Name, Tensor Tensor) a, (string Name, Tensor Tensor) b)
    {
        Check.Compatible(op, a.Tensor, b.Tensor);
        if (a.Tensor.Shape != b.Tensor.Shape)
            throw new ShapeMismatchException($"{op}: {a.Name} {a.Tensor.Describe()} and {b.Name} {b.Tensor.Describe()} differ in shape");
    }

    /// <summary>Mean squared error of <paramref name="input"/> against <paramref name="target"/> of the same shape
    /// (PyTorch's MSELoss, reduction mean).</summary>
    /// <exception cref="ShapeMismatchException">The shapes differ.</exception>
    public static Tensor MseLoss(Tensor input, Tensor target)
    {
        SameShape("MseLoss", ("input", input), ("target", target));
        using var d = input - target;
        using var sq = d * d;
        return Mean(sq);
    }

    /// <summary>Binary cross-entropy of logits against targets in [0, 1] of the same shape, averaged (PyTorch's
    /// BCEWithLogitsLoss): <c>max(x, 0) − x·z + log(1 + e^−|x|)</c>, stable for logits of any size.</summary>
    /// <exception cref="ShapeMismatchException">The shapes differ.</exception>
    public static Tensor BinaryCrossEntropyWithLogits(Tensor logits, Tensor targets)
    {
        SameShape("BinaryCrossEntropyWithLogits", ("logits", logits), ("targets", targets));
        using var positive = logits.Relu();
        using var xz = logits * targets;
        using var abs = logits.Abs();
        using var negAbs = abs.Neg();
        using var e = negAbs.Exp();
        using var onePlus = e + 1.0;
        using var soft = onePlus.Log();
        using var a = positive - xz;
        using var perElement = a + soft;
        return Mean(perElement);
    }

    /// <summary>Layer normalisation over the last dimension with optional affine gamma and beta [C].</summary>
    public static Tensor LayerNorm(Tensor x, Tensor? gamma, Tensor? beta, double eps = 1e-5)
    {
        using var xc = Rows(x, "LayerNorm");
        var cols = x.Shape[-1];
        foreach (var p in new[] { gamma, beta })
        {
            if (p is null)
                continue;
            Check.Compatible("LayerNorm", x, p);
            Check.Shape("LayerNorm", p, new Shape(cols), "gamma/beta");
        }
        var rows = (int)(x.Numel / Math.Max(cols, 1));
        var y = NewLike(x.Shape, x);
        using var mean = NewLike(new Shape(rows), x);
        using var rstd = NewLike(new Shape(rows), x);
        using var gc = gamma?.Contiguous();
        using var bc = beta?.Contiguous();
        x.Backend.LayerNorm(As2d(xc.View, cols), gc?.View ?? default, bc?.View ?? default, eps, As2d(y.View, cols), mean.View, rstd.View);
        var inputs = new List<Tensor> { x };
        if (gamma is not null) inputs.Add(gamma);
        if (beta is not null) inputs.Add(beta);
        var node = Autograd.Record(y, "LayerNorm", [.. inputs]);
        if (node is not null)
        {
            var sx = node.Save(xc);
            var sg = gc is null ? null : node.Save(gc);
            var sm = node.Save(mean);
            var sr = node.Save(rstd);
            node.Backward = g =>
            {
                using var gcont = g.Contiguous();
                var dx = NewLike(x.Shape, x);
                var dg = gamma is null ? null : NewLike(gamma.Shape, x);
                var db = beta is null ? null : NewLike(beta.Shape, x);
                g.Backend.LayerNormBackward(As2d(sx.View, cols), sg?.View ?? default, sm.View, sr.View, As2d(gcont.View, cols), As2d(dx.View, cols), dg?.View ?? default, db?.View ?? default);
                var grads = new List<Tensor?> { dx };
                if (gamma is not null) grads.Add(dg);
                if (beta is not null) grads.Add(db);
                return [.. grads];
            };
        }
        return y;
    }

    /// <summary>Rows of <paramref name="weight"/> [V, D] picked by I32 <paramref name="indices"/> of any shape: result [.., D].</summary>
    public static Tensor Embedding(Tensor indices, Tensor weight)
    {
        Check.Index("Embedding", indices);
        Check.Rank("Embedding", weight, 2, "weight");
        using var flat = indices.Reshape(-1);
        var vocab = weight.Shape[0];
        foreach (var v in flat.ToArray<int>())
        {
            if (v < 0 || v >= vocab)
                throw new ArgumentOutOfRangeException(nameof(indices), $"Embedding: index {v} is outside [0, {vocab}) for weight {weight.Describe()}");
        }
        using var rows = IndexSelect(weight, 0, flat);
        return rows.Reshape([.. indices.Shape.Dims, weight.Shape[1]]);
    }

    /// <summary>Dropout: in training, zeroes each element with probability p and scales the rest by 1/(1-p), drawing
    /// from <see cref="Rng"/>; identity otherwise.</summary>
    public static Tensor Dropout(Tensor x, double p, bool training)
    {
        Check.Float("Dropout", x);
        if (p is < 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(p), $"Dropout: p must be in [0, 1), got {p}");
        if (!training || p == 0)
            return Contiguous(x);
        using var xc = Rows(x, "Dropout");
        var y = NewLike(x.Shape, x);
        var mask = NewLike(x.Shape, x, DType.U8);
        var (seed, offset) = Rng.Take(x.Numel);
        x.Backend.Dropout(xc.View, p, seed, offset, y.View, mask.View);
        using (mask)
        {
            var node = Autograd.Record(y, "Dropout", x);
            if (node is not null)
            {
                var sm = node.Save(mask);
                node.Backward = g =>
                {
                    using var mf = Cast(sm, g.DType);
                    using var scaled = mf.Mul(1.0 / (1 - p));
                    return [Mul(g, scaled)];
                };
            }
        }
        return y;
    }
}
