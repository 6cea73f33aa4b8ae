using Frugal.Backends;

namespace Frugal;

/// <summary>Method and operator sugar over <see cref="F"/>, as PyTorch's tensor methods.</summary>
public sealed partial class Tensor
{
    /// <summary>Back-propagates from this scalar (gradient 1). Leaves accumulate into <see cref="Grad"/>.</summary>
    public void Backward()
    {
        ThrowIfDisposed();
        if (Numel != 1)
            throw new InvalidOperationException($"Backward: the output {Describe()} is not a scalar; pass a gradient of its shape with Backward(grad)");
        var ones = Ones(Shape, DType, Device, Memory.MemoryCategory.Gradient, "backward");
        try
        {
            Backward(ones);
        }
        catch
        {
            // Refused (no graph, a consumed graph, update in backward refusing a second pass): the seed is not left behind.
            if (!ones.IsDisposed)
                ones.Dispose();
            throw;
        }
    }

    /// <summary>Back-propagates <paramref name="grad"/> (same shape; ownership passes to autograd).</summary>
    public void Backward(Tensor grad)
    {
        ThrowIfDisposed();
        if (!RequiresGrad)
            throw new InvalidOperationException($"Backward: {Describe()} does not require grad and has no graph");
        if (grad.Shape != Shape || grad.DType != DType)
            throw new ShapeMismatchException($"Backward: gradient {grad.Describe()} does not match output {Describe()}");
        Autograd.Run(this, grad.DetachFromScope());
    }

    /// <summary>A leaf sharing this tensor's memory with no history (PyTorch's detach).</summary>
    public Tensor Detach() => Alias();

    /// <summary>A copy on <paramref name="device"/> (an alias when already there), staged through host memory,
    /// keeping the buffer's category and owner. Not recorded by autograd.</summary>
    public Tensor ToDevice(Device device)
    {
        ThrowIfDisposed();
        if (ReferenceEquals(device, Device))
            return Alias();
        using var c = F.Contiguous(this);
        var bytes = new byte[Numel * DType.SizeOf()];
        Backend.Download(c.View.Data, bytes);
        var t = Empty(Shape, DType, device, Buffer.Category, Buffer.Owner);
        t.Backend.Upload(bytes, t.Buffer.Address);
        return t;
    }

    /// <summary>Converts to another dtype.</summary>
    public Tensor To(DType dtype) => F.Cast(this, dtype);

    /// <summary>Reshapes (view when contiguous); one dim may be -1.</summary>
    public Tensor Reshape(params int[] shape) => F.Reshape(this, shape);

    /// <summary>Swaps two dims (view).</summary>
    public Tensor Transpose(int dim0, int dim1) => F.Transpose(this, dim0, dim1);

    /// <summary>Reorders dims (view).</summary>
    public Tensor Permute(params int[] perm) => F.Permute(this, perm);

    /// <summary>Slice [start, start+length) of a dim (view).</summary>
    public Tensor Narrow(int dim, int start, int length) => F.Narrow(this, dim, start, length);

    /// <summary>Broadcast view.</summary>
    public Tensor Expand(params int[] shape) => F.Expand(this, shape);

    /// <summary>Contiguous copy (alias when already contiguous).</summary>
    public Tensor Contiguous() => F.Contiguous(this);

    /// <summary>Matrix product.</summary>
    public Tensor MatMul(Tensor other) => F.MatMul(this, other);

    /// <summary>Sum of all elements.</summary>
    public Tensor Sum() => F.Sum(this);

    /// <summary>Mean of all elements.</summary>
    public Tensor Mean() => F.Mean(this);

    /// <summary>-x</summary>
    public Tensor Neg() => F.UnaryOp(UnaryOp.Neg, this);

    /// <summary>e^x</summary>
    public Tensor Exp() => F.UnaryOp(UnaryOp.Exp, this);

    /// <summary>ln x</summary>
    public Tensor Log() => F.UnaryOp(UnaryOp.Log, this);

    /// <summary>tanh x</summary>
    public Tensor Tanh() => F.UnaryOp(UnaryOp.Tanh, this);

    /// <summary>logistic sigmoid</summary>
    public Tensor Sigmoid() => F.UnaryOp(UnaryOp.Sigmoid, this);

    /// <summary>max(x, 0)</summary>
    public Tensor Relu() => F.UnaryOp(UnaryOp.Relu, this);

    /// <summary>GELU (tanh approximation).</summary>
    public Tensor Gelu() => F.UnaryOp(UnaryOp.Gelu, this);

    /// <summary>√x</summary>
    public Tensor Sqrt() => F.UnaryOp(UnaryOp.Sqrt, this);

    /// <summary>|x|</summary>
    public Tensor Abs() => F.UnaryOp(UnaryOp.Abs, this);

    /// <summary>x ^ exponent</summary>
    public Tensor Pow(double exponent) => F.UnaryOp(UnaryOp.PowScalar, this, exponent);

    /// <summary>x + s</summary>
    public Tensor Add(double s) => F.UnaryOp(UnaryOp.AddScalar, this, s);

    /// <summary>x · s</summary>
    public Tensor Mul(double s) => F.UnaryOp(UnaryOp.MulScalar, this, s);

    /// <summary>Elementwise sum with broadcasting.</summary>
    public static Tensor operator +(Tensor a, Tensor b) => F.Add(a, b);

    /// <summary>Elementwise difference with broadcasting.</summary>
    public static Tensor operator -(Tensor a, Tensor b) => F.Sub(a, b);

    /// <summary>Elementwise product with broadcasting.</summary>
    public static Tensor operator *(Tensor a, Tensor b) => F.Mul(a, b);

    /// <summary>Elementwise quotient with broadcasting.</summary>
    public static Tensor operator /(Tensor a, Tensor b) => F.Div(a, b);

    /// <summary>Negation.</summary>
    public static Tensor operator -(Tensor a) => a.Neg();

    /// <summary>Adds a scalar.</summary>
    public static Tensor operator +(Tensor a, double s) => a.Add(s);

    /// <summary>Subtracts a scalar.</summary>
    public static Tensor operator -(Tensor a, double s) => a.Add(-s);

    /// <summary>Multiplies by a scalar.</summary>
    public static Tensor operator *(Tensor a, double s) => a.Mul(s);

    /// <summary>Multiplies by a scalar.</summary>
    public static Tensor operator *(double s, Tensor a) => a.Mul(s);

    /// <summary>Divides by a scalar.</summary>
    public static Tensor operator /(Tensor a, double s) => a.Mul(1.0 / s);
}
