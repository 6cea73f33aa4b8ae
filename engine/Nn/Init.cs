namespace Frugal.Nn;

/// <summary>Seeded weight initialisation (PyTorch's nn.init). Each call draws a fresh stream from a per-thread
/// counter, so a model built after <see cref="ManualSeed"/> is identical on every run and every device.</summary>
public static class Init
{
    [ThreadStatic] private static ulong t_seed;
    [ThreadStatic] private static ulong t_count;

    /// <summary>Restarts the initialisation streams from <paramref name="seed"/>.</summary>
    public static void ManualSeed(ulong seed)
    {
        t_seed = seed;
        t_count = 0;
    }

    /// <summary>The seed of the next tensor's stream.</summary>
    public static ulong NextSeed() => unchecked(t_seed * 0x9E3779B97F4A7C15UL + ++t_count);

    /// <summary>U(-bound, bound).</summary>
    public static Tensor Uniform(Shape shape, double bound, Device? device = null, DType dtype = DType.F32)
        => Tensor.Uniform(shape, -bound, bound, NextSeed(), dtype, device);

    /// <summary>Kaiming (He) uniform for ReLU networks: bound = √(6 / fanIn).</summary>
    public static Tensor KaimingUniform(Shape shape, int fanIn, Device? device = null, DType dtype = DType.F32)
        => Uniform(shape, Math.Sqrt(6.0 / fanIn), device, dtype);

    /// <summary>Kaiming (He) normal: std = √(2 / fanIn).</summary>
    public static Tensor KaimingNormal(Shape shape, int fanIn, Device? device = null, DType dtype = DType.F32)
        => Tensor.Normal(shape, 0, Math.Sqrt(2.0 / fanIn), NextSeed(), dtype, device);

    /// <summary>Xavier (Glorot) uniform: bound = √(6 / (fanIn + fanOut)).</summary>
    public static Tensor XavierUniform(Shape shape, int fanIn, int fanOut, Device? device = null, DType dtype = DType.F32)
        => Uniform(shape, Math.Sqrt(6.0 / (fanIn + fanOut)), device, dtype);

    /// <summary>PyTorch's default for Linear and Conv2d weights and biases: U(±1/√fanIn).</summary>
    public static Tensor Default(Shape shape, int fanIn, Device? device = null, DType dtype = DType.F32)
        => Uniform(shape, 1.0 / Math.Sqrt(fanIn), device, dtype);
}
