using Frugal.Backends;

namespace Frugal;

public static partial class F
{
    /// <summary>Records a view op: <paramref name="y"/> shares <paramref name="x"/>'s buffer; the gradient maps back through <paramref name="back"/>.</summary>
    private static Tensor RecordView(Tensor y, Tensor x, string name, Func<Tensor, Tensor> back)
    {
        var node = Autograd.Record(y, name, x);
        if (node is not null)
            node.Backward = g => [back(g)];
        return y;
    }

    /// <summary>Same elements, new shape; a view when the layout allows (contiguous), else a copy. One dimension may be -1.</summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        Check.Live("Reshape", x);
        var dims = (int[])shape.Clone();
        if (dims.Any(d => d < -1))
            throw new ShapeMismatchException($"Reshape: [{string.Join(", ", shape)}] has a negative size other than -1, for {x.Describe()}");
        var infer = Array.IndexOf(dims, -1);
        long known = 1;
        for (var i = 0; i < dims.Length; i++)
        {
            if (i != infer)
                known *= dims[i];
        }
        if (infer >= 0)
        {
            if (known == 0 || x.Numel % known != 0 || Array.LastIndexOf(dims, -1) != infer)
                throw new ShapeMismatchException($"Reshape: cannot infer -1 in [{string.Join(", ", shape)}] for {x.Describe()}");
            dims[infer] = (int)(x.Numel / known);
        }
        var target = new Shape(dims);
        if (target.Numel != x.Numel)
            throw new ShapeMismatchException($"Reshape: {x.Describe()} ({x.Numel} elements) cannot be viewed as {target} ({target.Numel} elements)");
        if (!x.IsContiguous)
        {
            // The copy is recorded (its node leads back to x); the view of it holds that node alive.
            using var c = Contiguous(x);
            return Reshape(c, dims);
        }
        var y = x.AsStrided(target, target.ContiguousStrides(), x.Offset);
        return RecordView(y, x, "Reshape", g => g.Reshape(x.Shape.Dims));
    }

    /// <summary>Swaps two dimensions (a view).</summary>
    public static Tensor Transpose(Tensor x, int dim0, int dim1)
    {
        Check.Live("Transpose", x);
        var perm = Enumerable.Range(0, x.Rank).ToArray();
        var a = x.Shape.Normalize(dim0);
        var b = x.Shape.Normalize(dim1);
        (perm[a], perm[b]) = (perm[b], perm[a]);
        return Permute(x, perm);
    }

    /// <summary>Reorders dimensions (a view): result dim i is input dim perm[i].</summary>
    public static Tensor Permute(Tensor x, params int[] perm)
    {
        Check.Live("Permute", x);
        if (perm.Length != x.Rank || perm.Distinct().Count() != perm.Length || perm.Any(p => p < 0 || p >= x.Rank))
            throw new ShapeMismatchException($"Permute: [{string.Join(", ", perm)}] is not a permutation of the {x.Rank} dims of {x.Describe()}");
        var dims = new int[perm.Length];
        var strides = new int[perm.Length];
        var inverse = new int[perm.Length];
        for (var i = 0; i < perm.Length; i++)
        {
            dims[i] = x.Shape[perm[i]];
            strides[i] = x.RawStrides[perm[i]];
            inverse[perm[i]] = i;
        }
        var y = x.AsStrided(Shape.Wrap(dims), strides, x.Offset);
        return RecordView(y, x, "Permute", g => Permute(g, inverse));
    }

    /// <summary>Elements start..start+length-1 of dimension <paramref name="dim"/> (a view).</summary>
    public static Tensor Narrow(Tensor x, int dim, int start, int length)
    {
        Check.Live("Narrow", x);
        var d = x.Shape.Normalize(dim);
        if (start < 0 || length < 0 || start + length > x.Shape[d])
            throw new ArgumentOutOfRangeException(nameof(start), $"Narrow: [{start}, {start + length}) is outside dimension {d} of {x.Describe()}");
        var dims = x.Shape.ToArray();
        dims[d] = length;
        var y = x.AsStrided(Shape.Wrap(dims), x.RawStrides, x.Offset + (long)start * x.RawStrides[d]);
        return RecordView(y, x, "Narrow", g =>
        {
            var full = Tensor.Zeros(x.Shape, g.DType, g.Device, Memory.MemoryContext.Category, Memory.MemoryContext.Owner);
            using var part = full.AsStrided(g.Shape, full.RawStrides, (long)start * full.RawStrides[d]);
            g.Backend.Copy(g.View, part.View);
            return full;
        });
    }

    /// <summary>Broadcasts to <paramref name="shape"/> (a view with stride 0 on expanded dimensions).</summary>
    public static Tensor Expand(Tensor x, params int[] shape)
    {
        Check.Live("Expand", x);
        var target = new Shape(shape);
        if (Shape.Broadcast(x.Shape, target, "Expand") != target)
            throw new ShapeMismatchException($"Expand: {x.Describe()} does not expand to {target}");
        var v = ExpandedView(x, target);
        var y = x.AsStrided(target, v.Strides, x.Offset);
        return RecordView(y, x, "Expand", g => SumTo(g, x.Shape));
    }

    /// <summary>A contiguous tensor with the same elements (an alias when already contiguous).</summary>
    public static Tensor Contiguous(Tensor x)
    {
        Check.Live("Contiguous", x);
        if (x.IsContiguous)
        {
            var a = x.Alias();
            return RecordView(a, x, "Contiguous", g => g.Alias());
        }
        var y = NewLike(x.Shape, x);
        x.Backend.Copy(x.View, y.View);
        return RecordView(y, x, "Contiguous", g => g.Alias());
    }

    /// <summary>Inserts a dimension of size 1 at <paramref name="dim"/>.</summary>
    public static Tensor Unsqueeze(Tensor x, int dim)
    {
        var d = dim < 0 ? dim + x.Rank + 1 : dim;
        if (d < 0 || d > x.Rank)
            throw new ArgumentOutOfRangeException(nameof(dim), $"Unsqueeze: dim {dim} out of range for {x.Describe()}");
        var dims = x.Shape.ToArray().ToList();
        dims.Insert(d, 1);
        return Reshape(x, [.. dims]);
    }

    /// <summary>Removes dimension <paramref name="dim"/>, which must have size 1.</summary>
    public static Tensor Squeeze(Tensor x, int dim)
    {
        var d = x.Shape.Normalize(dim);
        if (x.Shape[d] != 1)
            throw new ShapeMismatchException($"Squeeze: dimension {d} of {x.Describe()} is not 1");
        var dims = x.Shape.ToArray().ToList();
        dims.RemoveAt(d);
        return Reshape(x, [.. dims]);
    }

    /// <summary>Flattens dimensions startDim..endDim into one.</summary>
    public static Tensor Flatten(Tensor x, int startDim = 0, int endDim = -1)
    {
        Check.Live("Flatten", x);
        if (x.Rank == 0)
            return Reshape(x, 1);
        var s = x.Shape.Normalize(startDim);
        var e = x.Shape.Normalize(endDim);
        var dims = new List<int>();
        for (var i = 0; i < s; i++)
            dims.Add(x.Shape[i]);
        var merged = 1;
        for (var i = s; i <= e; i++)
            merged *= x.Shape[i];
        dims.Add(merged);
        for (var i = e + 1; i < x.Rank; i++)
            dims.Add(x.Shape[i]);
        return Reshape(x, [.. dims]);
    }

    /// <summary>Joins tensors along <paramref name="dim"/>; all other dimensions must agree.</summary>
    public static Tensor Concat(IReadOnlyList<Tensor> xs, int dim)
    {
        if (xs.Count == 0)
            throw new ArgumentException("Concat: no tensors given");
        var first = xs[0];
        var d = first.Shape.Normalize(dim);
        var total = 0;
        foreach (var x in xs)
        {
            Check.Compatible("Concat", first, x);
            if (x.Rank != first.Rank || Enumerable.Range(0, x.Rank).Any(i => i != d && x.Shape[i] != first.Shape[i]))
                throw new ShapeMismatchException($"Concat: shapes {string.Join(", ", xs.Select(t => t.Shape.ToString()))} differ outside dimension {d}");
            total += x.Shape[d];
        }
        var dims = first.Shape.ToArray();
        dims[d] = total;
        var y = NewLike(new Shape(dims), first);
        var offsets = new int[xs.Count];
        var at = 0;
        for (var i = 0; i < xs.Count; i++)
        {
            offsets[i] = at;
            using var part = y.AsStrided(xs[i].Shape, y.RawStrides, (long)at * y.RawStrides[d]);
            y.Backend.Copy(xs[i].View, part.View);
            at += xs[i].Shape[d];
        }
        var node = Autograd.Record(y, "Concat", [.. xs]);
        if (node is not null)
        {
            var sizes = xs.Select(x => x.Shape[d]).ToArray();
            node.Backward = g =>
            {
                var grads = new Tensor?[sizes.Length];
                for (var i = 0; i < sizes.Length; i++)
                {
                    if (!node.NeedsGrad(i))
                        continue;
                    using var part = g.AsStrided(xs[i].Shape, g.RawStrides, g.Offset + (long)offsets[i] * g.RawStrides[d]);
                    grads[i] = Contiguous(part);
                }
                return grads;
            };
        }
        return y;
    }

    /// <summary>Rows of <paramref name="x"/> along <paramref name="dim"/> picked by I32 <paramref name="index"/> (gradient: scatter-add).</summary>
    public static Tensor IndexSelect(Tensor x, int dim, Tensor index)
    {
        Check.Float("IndexSelect", x);
        Check.Index("IndexSelect", index);
        Check.SameDevice("IndexSelect", x, index);
        Check.Rank("IndexSelect", index, 1, "index");
        var d = x.Shape.Normalize(dim);
        var dims = x.Shape.ToArray();
        dims[d] = index.Shape[0];
        var y = NewLike(new Shape(dims), x);
        using var xc = x.IsContiguous ? x.Alias() : x.Contiguous();
        using var ic = index.Contiguous();
        x.Backend.IndexSelect(xc.View, d, ic.View, y.View);
        var node = Autograd.Record(y, "IndexSelect", x);
        if (node is not null)
        {
            var si = node.Save(ic);
            node.Backward = g =>
            {
                var gx = Tensor.Zeros(x.Shape, g.DType, g.Device, Memory.MemoryContext.Category, Memory.MemoryContext.Owner);
                using var gc = g.Contiguous();
                g.Backend.IndexAdd(gc.View, d, si.View, gx.View);
                return [gx];
            };
        }
        return y;
    }

    /// <summary>Converts to another dtype (a copy; gradients flow back between float types).</summary>
    public static Tensor Cast(Tensor x, DType dtype)
    {
        Check.Live("Cast", x);
        using var xc = x.IsContiguous ? x.Alias() : x.Contiguous();
        var y = NewLike(x.Shape, x, dtype);
        x.Backend.Cast(xc.View, y.View);
        if (dtype.IsFloat() && x.DType.IsFloat())
        {
            var node = Autograd.Record(y, "Cast", x);
            if (node is not null)
                node.Backward = g => [Cast(g, x.DType)];
        }
        return y;
    }
}
