namespace Frugal;

/// <summary>Preconditions shared by ops; each failure names the op and the tensors involved.</summary>
internal static class Check
{
    public static void Live(string op, Tensor t)
    {
        if (t.IsDisposed)
            throw new ObjectDisposedException(nameof(Tensor), $"{op}: input {t.Describe()} was disposed");
    }

    public static void SameDevice(string op, Tensor a, Tensor b)
    {
        Live(op, a);
        Live(op, b);
        if (!ReferenceEquals(a.Device, b.Device))
            throw new ArgumentException($"{op}: tensors are on different devices: {a.Describe()} and {b.Describe()}");
    }

    public static void SameDType(string op, Tensor a, Tensor b)
    {
        if (a.DType != b.DType)
            throw new ArgumentException($"{op}: dtype mismatch: {a.Describe()} and {b.Describe()} (convert with .To(dtype))");
    }

    public static void Compatible(string op, Tensor a, Tensor b)
    {
        SameDevice(op, a, b);
        SameDType(op, a, b);
    }

    public static void Float(string op, Tensor t)
    {
        Live(op, t);
        if (!t.DType.IsComputeType())
            throw new ArgumentException($"{op}: needs an f32 or f64 tensor, got {t.Describe()} (convert with .To(DType.F32))");
    }

    public static void Index(string op, Tensor t)
    {
        Live(op, t);
        if (t.DType != DType.I32)
            throw new ArgumentException($"{op}: indices must be i32, got {t.Describe()}");
    }

    public static void Rank(string op, Tensor t, int rank, string what)
    {
        if (t.Rank != rank)
            throw new ShapeMismatchException($"{op}: {what} must have rank {rank}, got {t.Describe()}");
    }

    public static void Shape(string op, Tensor t, Shape expected, string what)
    {
        if (t.Shape != expected)
            throw new ShapeMismatchException($"{op}: {what} must have shape {expected}, got {t.Describe()}");
    }
}
