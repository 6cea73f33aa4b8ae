using Frugal.Data;

namespace Frugal.Models;

/// <summary>Datasets embedded in the CLI assembly (see models/data/README.md).</summary>
internal static class EmbeddedData
{
    /// <summary>Resource names of the embedded Fashion-MNIST slice: train images, train labels, test images, test labels.</summary>
    public static readonly string[] FashionMnistResources =
    [
        "data/fashion-train-images-10k-idx3-ubyte.gz",
        "data/fashion-train-labels-10k-idx1-ubyte.gz",
        "data/fashion-test-images-2k-idx3-ubyte.gz",
        "data/fashion-test-labels-2k-idx1-ubyte.gz",
    ];

    /// <summary>
    /// The embedded class-balanced Fashion-MNIST slice: 10,000 training images (1,000 per class)
    /// and 2,000 test images (200 per class).
    /// </summary>
    public static FashionMnist FashionMnistSlice()
    {
        using var trainImages = Open(FashionMnistResources[0]);
        using var trainLabels = Open(FashionMnistResources[1]);
        using var testImages = Open(FashionMnistResources[2]);
        using var testLabels = Open(FashionMnistResources[3]);
        var trainX = Idx.ReadUInt8(trainImages, FashionMnistResources[0]);
        var trainY = Idx.ReadUInt8(trainLabels, FashionMnistResources[1]);
        var testX = Idx.ReadUInt8(testImages, FashionMnistResources[2]);
        var testY = Idx.ReadUInt8(testLabels, FashionMnistResources[3]);
        var source = "embedded slice of Fashion-MNIST";
        return FashionMnist.FromIdx(trainX, trainY, testX, testY, source);
    }

    /// <summary>
    /// Loads Fashion-MNIST from <paramref name="dataDir"/> if given, else from the Debian package folder
    /// (<see cref="FashionMnist.DefaultDirectory"/>) if installed, else the embedded slice.
    /// </summary>
    public static FashionMnist LoadFashionMnist(string? dataDir) => FashionMnist.Load(dataDir, FashionMnistSlice);

    private static Stream Open(string resource) =>
        typeof(EmbeddedData).Assembly.GetManifestResourceStream(resource)
        ?? throw new FileNotFoundException($"embedded resource {resource} is missing from {typeof(EmbeddedData).Assembly.GetName().Name}", resource);

    /// <summary>The default text corpus of a machine without Debian's fortunes: this project's README (our own text),
    /// embedded gzip-compressed as data/corpus-readme.txt.gz.</summary>
    public static TextCorpus ReadmeCorpus()
    {
        using var stream = Open("data/corpus-readme.txt.gz");
        using var gzip = new System.IO.Compression.GZipStream(stream, System.IO.Compression.CompressionMode.Decompress);
        using var bytes = new MemoryStream();
        gzip.CopyTo(bytes);
        return TextCorpus.FromBytes("the README embedded in the CLI (apt-get install fortunes for a larger corpus)", bytes.ToArray());
    }
}
