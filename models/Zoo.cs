using Frugal.Nn;
using Frugal.Training.Sparsity;

namespace Frugal.Models;

/// <summary>The model definitions the CLI trains.</summary>
public static class Zoo
{
    /// <summary>Names accepted by <c>--model</c>.</summary>
    public static IReadOnlyList<string> Names { get; } = ["mlp", "cnn"];

    /// <summary>784-512-512-10 ReLU perceptron over flattened 28×28 images; with a CSR <paramref name="density"/>
    /// (in (0, 1)), its weights are sparse with that global density, spread uniformly or by ERK
    /// (<paramref name="erk"/>; a layer that ERK makes fully dense stays a dense Linear).</summary>
    public static Sequential Mlp(int inputs = 784, int hidden = 512, int classes = 10, Device? device = null, double? density = null, bool erk = false)
    {
        var shapes = MlpShapes(inputs, hidden, classes);
        var densities = density is not { } d ? null : MlpDensities(d, erk, inputs, hidden, classes);
        Module Layer(int i) => densities is null || densities[i] >= 1
            ? new Linear(shapes[i].Cols, shapes[i].Rows, device: device)
            : new SparseLinear(shapes[i].Cols, shapes[i].Rows, densities[i], device: device);
        return new Sequential(new Flatten(), Layer(0), new ReLU(), Layer(1), new ReLU(), Layer(2));
    }

    /// <summary>Per-Linear densities of the MLP for a global <paramref name="density"/>, uniform or ERK.</summary>
    public static double[] MlpDensities(double density, bool erk, int inputs = 784, int hidden = 512, int classes = 10)
    {
        var shapes = MlpShapes(inputs, hidden, classes);
        return erk ? Distribution.Erk(shapes, density) : Distribution.Uniform(shapes, density);
    }

    private static (int Rows, int Cols)[] MlpShapes(int inputs, int hidden, int classes) => [(hidden, inputs), (hidden, hidden), (classes, hidden)];

    /// <summary>Two 3×3 convolutions (32, 64 channels, each ReLU + 2×2 max-pool), then 256-unit and 10-unit
    /// fully connected layers: the classic small CNN for 28×28 images.</summary>
    public static Sequential Cnn(int channels = 1, int side = 28, int classes = 10, int hidden = 256, Device? device = null) => new(
        new Conv2d(channels, 32, 3, padding: 1, device: device),
        new ReLU(),
        new MaxPool2d(2),
        new Conv2d(32, 64, 3, padding: 1, device: device),
        new ReLU(),
        new MaxPool2d(2),
        new Flatten(),
        new Linear(64 * (side / 4) * (side / 4), hidden, device: device),
        new ReLU(),
        new Linear(hidden, classes, device: device));

    /// <summary>The model called <paramref name="name"/>.</summary>
    public static Sequential Create(string name, Device? device = null, double? density = null, bool erk = false) => name switch
    {
        "mlp" => Mlp(device: device, density: density, erk: erk),
        "cnn" when density is not null => throw new ArgumentException("csr weights are built for Linear layers only so far (sparse convolutions come later): use --model mlp"),
        "cnn" => Cnn(device: device),
        _ => throw new ArgumentException($"unknown model '{name}'; choose one of: {string.Join(", ", Names)}"),
    };
}
