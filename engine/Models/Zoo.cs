using Frugal.Formats;
using Frugal.Nn;
using Frugal.Training.Sparsity;

namespace Frugal.Models;

/// <summary>The model definitions the CLI trains. Every weight layer takes the model's <see cref="WeightFormat"/>;
/// with a sparse format the global density is spread over the layers uniformly or by ERK (a layer that ERK makes
/// fully dense stays dense), and a layer whose sizes are not whole blocks of a BSR format stays dense (the 10-class
/// head; the first convolution's 9 inputs per channel). With low rank the output head stays dense (its rank is at
/// most 10 already) and so does a layer with fewer than 16 inputs per output (the first convolution). Quantized
/// formats apply to every layer; DoReFa input quantization (<see cref="QuantizedWeightFormat.ActivationBits"/>) to every
/// layer but the first, whose input is the standardized image (as in DoReFa-Net).</summary>
public static class Zoo
{
    /// <summary>Names accepted by <c>--model</c>.</summary>
    public static IReadOnlyList<string> Names { get; } = ["mlp", "mlp-shared", "cnn"];

    /// <summary>784-512-512-10 ReLU perceptron over flattened 28×28 images.</summary>
    /// <remarks>With <paramref name="checkpoint"/> each hidden block (Linear + ReLU) is a checkpoint segment.</remarks>
    public static Sequential Mlp(int inputs = 784, int hidden = 512, int classes = 10, Device? device = null, WeightFormat? format = null, bool erk = false, bool checkpoint = false)
    {
        var f = LayerFormats(MlpShapes(inputs, hidden, classes), format ?? WeightFormat.Dense, erk);
        return new Sequential([
            new Flatten(),
            .. Block(checkpoint, new Linear(inputs, hidden, f[0], device: device), new ReLU()),
            .. Block(checkpoint, new Linear(hidden, hidden, f[1], device: device), new ReLU()),
            new Linear(hidden, classes, f[2], device: device)]);
    }

    /// <summary>The layers of one block, or one checkpoint segment holding them.</summary>
    private static Module[] Block(bool checkpoint, params Module[] layers) => checkpoint ? [new Checkpointed(new Sequential(layers))] : layers;

    /// <summary>784-512-512-512-10, whose two 512→512 hidden layers are one shared weight (ALBERT's cross-layer
    /// sharing, <see cref="Shared"/>): four weight layers, three weights.</summary>
    public static Sequential SharedMlp(int inputs = 784, int hidden = 512, int classes = 10, Device? device = null, WeightFormat? format = null, bool erk = false, bool checkpoint = false)
    {
        var f = LayerFormats(MlpShapes(inputs, hidden, classes), format ?? WeightFormat.Dense, erk);
        var middle = new Linear(hidden, hidden, f[1], device: device);
        return new Sequential([
            new Flatten(),
            .. Block(checkpoint, new Linear(inputs, hidden, f[0], device: device), new ReLU()),
            .. Block(checkpoint, middle, new ReLU()),
            .. Block(checkpoint, new Shared(middle), new ReLU()),
            new Linear(hidden, classes, f[2], device: device)]);
    }

    /// <summary>Two 3×3 convolutions (<paramref name="width"/> and twice as many channels, by default 32 and 64, each
    /// ReLU + 2×2 max-pool), then <paramref name="hidden"/>-unit and 10-unit fully connected layers: the classic small
    /// CNN for 28×28 images.</summary>
    /// <remarks>With <paramref name="checkpoint"/> each block (convolution + ReLU + pool, Linear + ReLU) is a
    /// checkpoint segment.</remarks>
    public static Sequential Cnn(int channels = 1, int side = 28, int classes = 10, int hidden = 256, Device? device = null, WeightFormat? format = null, bool erk = false, bool checkpoint = false, int width = 32)
    {
        var flat = 2 * width * (side / 4) * (side / 4);
        var f = LayerFormats(CnnShapes(channels, side, classes, hidden, width), format ?? WeightFormat.Dense, erk);
        return new Sequential([
            .. Block(checkpoint, new Conv2d(channels, width, 3, padding: 1, device: device, format: f[0]), new ReLU(), new MaxPool2d(2)),
            .. Block(checkpoint, new Conv2d(width, 2 * width, 3, padding: 1, device: device, format: f[1]), new ReLU(), new MaxPool2d(2)),
            new Flatten(),
            .. Block(checkpoint, new Linear(flat, hidden, f[2], device: device), new ReLU()),
            new Linear(hidden, classes, f[3], device: device)]);
    }

    /// <summary>The model called <paramref name="name"/>.</summary>
    public static Sequential Create(string name, Device? device = null, WeightFormat? format = null, bool erk = false, bool checkpoint = false) => name switch
    {
        "mlp" => Mlp(device: device, format: format, erk: erk, checkpoint: checkpoint),
        "mlp-shared" => SharedMlp(device: device, format: format, erk: erk, checkpoint: checkpoint),
        "cnn" => Cnn(device: device, format: format, erk: erk, checkpoint: checkpoint),
        _ => throw new ArgumentException($"unknown model '{name}'; choose one of: {string.Join(", ", Names)}"),
    };

    /// <summary>The density of each weight layer of model <paramref name="name"/> (in order; 1 for a dense layer)
    /// under <paramref name="format"/>.</summary>
    public static double[] Densities(string name, WeightFormat format, bool erk) => name switch
    {
        "mlp" or "mlp-shared" => Densities(MlpShapes(784, 512, 10), format, erk),
        "cnn" => Densities(CnnShapes(1, 28, 10, 256, 32), format, erk),
        _ => throw new ArgumentException($"unknown model '{name}'; choose one of: {string.Join(", ", Names)}"),
    };

    private static int[][] MlpShapes(int inputs, int hidden, int classes) => [[hidden, inputs], [hidden, hidden], [classes, hidden]];

    private static int[][] CnnShapes(int channels, int side, int classes, int hidden, int width)
        => [[width, channels, 3, 3], [2 * width, width, 3, 3], [hidden, 2 * width * (side / 4) * (side / 4)], [classes, hidden]];

    /// <summary>The format of each weight layer: see the class summary.</summary>
    private static WeightFormat[] LayerFormats(int[][] shapes, WeightFormat format, bool erk)
    {
        if (format is LowRankWeightFormat lowRank)
        {
            return [.. shapes.Select((s, i) =>
            {
                var cols = s[1..].Aggregate(1, (p, d) => p * d);
                if (i == shapes.Length - 1 || cols < 16)
                    return WeightFormat.Dense;
                LowRankFormat.CheckRank(s[0], cols, lowRank.RankFor(s[0], cols));
                return format;
            })];
        }
        if (format is QuantizedWeightFormat quantized)
            return [.. shapes.Select((_, i) => i == 0 ? quantized.WithActivationBits(0) : format)];
        if (format is not SparseWeightFormat)
            return [.. shapes.Select(s => format.Fits(new Shape(s)) ? format : WeightFormat.Dense)];
        return [.. Densities(shapes, format, erk).Select(d => d >= 1 ? WeightFormat.Dense : format.WithDensity(d))];
    }

    /// <summary>Per-layer densities: the format's global density over the layers it fits, spread uniformly or by
    /// ERK; 1 for the others.</summary>
    private static double[] Densities(int[][] shapes, WeightFormat format, bool erk)
    {
        var result = shapes.Select(_ => 1.0).ToArray();
        if (format is not SparseWeightFormat)
            return result;
        var fits = Enumerable.Range(0, shapes.Length).Where(i => format.Fits(new Shape(shapes[i]))).ToArray();
        if (fits.Length == 0)
            throw new ArgumentException($"no layer of this model fits {format}: every one would stay dense");
        var spread = erk ? Distribution.Erk([.. fits.Select(i => shapes[i])], format.Density) : [.. fits.Select(_ => format.Density)];
        for (var j = 0; j < fits.Length; j++)
            result[fits[j]] = spread[j];
        return result;
    }
}
