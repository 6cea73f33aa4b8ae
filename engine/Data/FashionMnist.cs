namespace Frugal.Data;

/// <summary>How <see cref="ImageDataset.FillPixels"/> maps a pixel byte <c>x</c> (0..255) to a float.</summary>
public enum PixelNormalization
{
    /// <summary>The raw value as a float, 0..255.</summary>
    None,

    /// <summary><c>x / 255</c>, giving 0..1.</summary>
    UnitRange,

    /// <summary><c>(x / 255 - mean) / std</c> with the dataset's mean and standard deviation.</summary>
    Standardize,
}

/// <summary>
/// One split of a greyscale image-classification dataset held as plain arrays:
/// <see cref="Count"/> images of <see cref="Height"/> × <see cref="Width"/> bytes and one label per image.
/// </summary>
public sealed class ImageDataset
{
    private readonly float[] _standardizeTable;

    /// <summary>Wraps pixel and label arrays (no copy) after checking their sizes and label range.</summary>
    /// <param name="pixels">Row-major images, length labels.Length · <paramref name="height"/> · <paramref name="width"/>.</param>
    /// <param name="labels">One class index per image, each below <paramref name="classes"/>.</param>
    /// <param name="height">Image height in pixels.</param>
    /// <param name="width">Image width in pixels.</param>
    /// <param name="classes">Number of classes.</param>
    /// <param name="mean">Mean of <c>x / 255</c> over the dataset, used by <see cref="PixelNormalization.Standardize"/>.</param>
    /// <param name="std">Standard deviation of <c>x / 255</c>, used by <see cref="PixelNormalization.Standardize"/>.</param>
    /// <param name="name">Name used in error messages.</param>
    /// <exception cref="InvalidDataException">Sizes disagree or a label is out of range.</exception>
    public ImageDataset(byte[] pixels, byte[] labels, int height, int width, int classes, float mean, float std, string name = "")
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(std);
        var label = Idx.Label(name);
        var count = labels.Length;
        if ((long)count * height * width != pixels.LongLength)
        {
            throw new InvalidDataException(
                $"{label}{pixels.LongLength} pixel bytes do not hold {count} images of {height}x{width} (one per label)");
        }

        for (var i = 0; i < labels.Length; i++)
        {
            if (labels[i] >= classes)
            {
                throw new InvalidDataException($"{label}label {labels[i]} at index {i} is out of range 0..{classes - 1}");
            }
        }

        Pixels = pixels;
        Labels = labels;
        Count = count;
        Height = height;
        Width = width;
        Classes = classes;
        Mean = mean;
        Std = std;
        _standardizeTable = new float[256];
        for (var v = 0; v < 256; v++)
        {
            _standardizeTable[v] = ((v / 255f) - mean) / std;
        }
    }

    /// <summary>Number of images (and labels).</summary>
    public int Count { get; }

    /// <summary>Image height in pixels.</summary>
    public int Height { get; }

    /// <summary>Image width in pixels.</summary>
    public int Width { get; }

    /// <summary>Pixels per image (<see cref="Height"/> · <see cref="Width"/>).</summary>
    public int ImageSize => Height * Width;

    /// <summary>Number of classes; every label is below it.</summary>
    public int Classes { get; }

    /// <summary>Mean of <c>x / 255</c> used for standardization.</summary>
    public float Mean { get; }

    /// <summary>Standard deviation of <c>x / 255</c> used for standardization.</summary>
    public float Std { get; }

    /// <summary>All images, row-major, <see cref="Count"/> · <see cref="Height"/> · <see cref="Width"/> bytes.</summary>
    public byte[] Pixels { get; }

    /// <summary>Class index of each image.</summary>
    public byte[] Labels { get; }

    /// <summary>The pixels of one image.</summary>
    /// <param name="index">Image index, 0..<see cref="Count"/>-1.</param>
    public ReadOnlySpan<byte> Image(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        return Pixels.AsSpan(index * ImageSize, ImageSize);
    }

    /// <summary>Number of images of each class.</summary>
    public int[] ClassCounts()
    {
        var counts = new int[Classes];
        foreach (var y in Labels)
        {
            counts[y]++;
        }

        return counts;
    }

    /// <summary>
    /// Writes the images at <paramref name="indices"/> into <paramref name="destination"/> as floats,
    /// one after another (a batch laid out [indices.Length, Height, Width]).
    /// </summary>
    /// <param name="indices">Image indices, each 0..<see cref="Count"/>-1.</param>
    /// <param name="destination">At least indices.Length · <see cref="ImageSize"/> floats.</param>
    /// <param name="normalization">Pixel mapping; by default <c>(x / 255 - mean) / std</c>.</param>
    /// <exception cref="ArgumentException">The destination is too small.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    public void FillPixels(ReadOnlySpan<int> indices, Span<float> destination, PixelNormalization normalization = PixelNormalization.Standardize)
    {
        var size = ImageSize;
        if (destination.Length < (long)indices.Length * size)
        {
            throw new ArgumentException(
                $"destination holds {destination.Length} floats; {indices.Length} images of {Height}x{Width} need {(long)indices.Length * size}",
                nameof(destination));
        }

        for (var b = 0; b < indices.Length; b++)
        {
            var src = Image(CheckIndex(indices[b], b));
            var dst = destination.Slice(b * size, size);
            switch (normalization)
            {
                case PixelNormalization.None:
                    for (var i = 0; i < size; i++)
                    {
                        dst[i] = src[i];
                    }

                    break;
                case PixelNormalization.UnitRange:
                    for (var i = 0; i < size; i++)
                    {
                        dst[i] = src[i] / 255f;
                    }

                    break;
                case PixelNormalization.Standardize:
                    var table = _standardizeTable;
                    for (var i = 0; i < size; i++)
                    {
                        dst[i] = table[src[i]];
                    }

                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(normalization), normalization, "unknown pixel normalization");
            }
        }
    }

    /// <summary>Writes the labels of the images at <paramref name="indices"/> into <paramref name="destination"/>.</summary>
    /// <param name="indices">Image indices, each 0..<see cref="Count"/>-1.</param>
    /// <param name="destination">At least indices.Length ints.</param>
    /// <exception cref="ArgumentException">The destination is too small.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An index is out of range.</exception>
    public void FillLabels(ReadOnlySpan<int> indices, Span<int> destination)
    {
        if (destination.Length < indices.Length)
        {
            throw new ArgumentException($"destination holds {destination.Length} ints; {indices.Length} labels requested", nameof(destination));
        }

        for (var b = 0; b < indices.Length; b++)
        {
            destination[b] = Labels[CheckIndex(indices[b], b)];
        }
    }

    private int CheckIndex(int index, int position)
    {
        if ((uint)index >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(
                nameof(index), index, $"index {index} at position {position} is out of range 0..{Count - 1}");
        }

        return index;
    }
}

/// <summary>
/// Fashion-MNIST (Zalando, MIT licence): 28×28 greyscale images of 10 clothing classes, with a
/// training and a test split, held as plain byte arrays.
/// </summary>
public sealed class FashionMnist
{
    /// <summary>Where the Debian package <c>dataset-fashion-mnist</c> installs the dataset.</summary>
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

    /// <summary>Number of classes.</summary>
    public const int ClassCount = 10;

    /// <summary>Image height and width in pixels.</summary>
    public const int ImageSide = 28;

    /// <summary>Mean of <c>x / 255</c> over the Fashion-MNIST training images.</summary>
    public const float Mean = 0.2860f;

    /// <summary>Standard deviation of <c>x / 255</c> over the Fashion-MNIST training images.</summary>
    public const float Std = 0.3530f;

    /// <summary>Class names, indexed by label.</summary>
    public static IReadOnlyList<string> ClassNames { get; } =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    /// <summary>
    /// The four file names expected in a data folder, in the order train images, train labels,
    /// test images, test labels. Each may be present gzip-compressed (this name) or raw (without ".gz").
    /// </summary>
    public static IReadOnlyList<string> FileNames { get; } =
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"];

    /// <summary>Builds the dataset from two loaded splits.</summary>
    /// <param name="train">Training split.</param>
    /// <param name="test">Test split.</param>
    /// <param name="source">Human-readable description of where the data came from.</param>
    public FashionMnist(ImageDataset train, ImageDataset test, string source)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(test);
        Train = train;
        Test = test;
        Source = source ?? "";
    }

    /// <summary>Training split.</summary>
    public ImageDataset Train { get; }

    /// <summary>Test split.</summary>
    public ImageDataset Test { get; }

    /// <summary>Where the data came from: a folder path or a description such as "embedded slice of Fashion-MNIST".</summary>
    public string Source { get; }

    /// <summary>
    /// Loads Fashion-MNIST: from <paramref name="dataDir"/> if given; otherwise from
    /// <see cref="DefaultDirectory"/> if that folder exists; otherwise from <paramref name="fallback"/>.
    /// </summary>
    /// <param name="dataDir">Folder holding the four files of <see cref="FileNames"/>, or null.</param>
    /// <param name="fallback">Supplies the dataset when no folder is given or installed (e.g. an embedded slice), or null.</param>
    /// <exception cref="DirectoryNotFoundException">The folder is missing, or nothing is installed and there is no fallback.</exception>
    /// <exception cref="FileNotFoundException">A file is missing from the folder.</exception>
    /// <exception cref="InvalidDataException">A file is malformed or the files disagree.</exception>
    public static FashionMnist Load(string? dataDir = null, Func<FashionMnist>? fallback = null) =>
        Load(dataDir, fallback, DefaultDirectory);

    internal static FashionMnist Load(string? dataDir, Func<FashionMnist>? fallback, string defaultDirectory)
    {
        if (!string.IsNullOrEmpty(dataDir))
        {
            return LoadDirectory(dataDir);
        }

        if (Directory.Exists(defaultDirectory))
        {
            return LoadDirectory(defaultDirectory);
        }

        if (fallback is not null)
        {
            return fallback();
        }

        throw new DirectoryNotFoundException(
            $"Fashion-MNIST not found: no data folder given, {defaultDirectory} does not exist (install the Debian package " +
            $"dataset-fashion-mnist), and no fallback is available. Expected files: {string.Join(", ", FileNames)}");
    }

    /// <summary>Loads Fashion-MNIST from a folder holding the files of <see cref="FileNames"/> (gzip or raw).</summary>
    /// <param name="directory">The folder.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed or the files disagree.</exception>
    public static FashionMnist LoadDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException(
                $"Fashion-MNIST data folder not found: {directory} (expected it to hold {string.Join(", ", FileNames)}; raw files without .gz also work)");
        }

        var paths = new string[FileNames.Count];
        for (var i = 0; i < paths.Length; i++)
        {
            paths[i] = FindFile(directory, FileNames[i]);
        }

        var dir = Path.TrimEndingDirectorySeparator(directory);
        return FromIdx(Idx.ReadUInt8(paths[0]), Idx.ReadUInt8(paths[1]), Idx.ReadUInt8(paths[2]), Idx.ReadUInt8(paths[3]), dir);
    }

    /// <summary>Loads Fashion-MNIST from four IDX streams (gzip or raw); the streams are read to the end, not disposed.</summary>
    /// <param name="trainImages">Training images, dims [N, H, W].</param>
    /// <param name="trainLabels">Training labels, dims [N].</param>
    /// <param name="testImages">Test images, dims [M, H, W].</param>
    /// <param name="testLabels">Test labels, dims [M].</param>
    /// <param name="source">Description of the source, stored in <see cref="Source"/> and used in error messages.</param>
    /// <exception cref="InvalidDataException">A stream is malformed or the streams disagree.</exception>
    public static FashionMnist FromStreams(Stream trainImages, Stream trainLabels, Stream testImages, Stream testLabels, string source) =>
        FromIdx(
            Idx.ReadUInt8(trainImages, $"{source} (train images)"),
            Idx.ReadUInt8(trainLabels, $"{source} (train labels)"),
            Idx.ReadUInt8(testImages, $"{source} (test images)"),
            Idx.ReadUInt8(testLabels, $"{source} (test labels)"),
            source);

    /// <summary>Builds Fashion-MNIST from four IDX arrays, checking shapes, counts and label range.</summary>
    /// <param name="trainImages">Training images, dims [N, H, W].</param>
    /// <param name="trainLabels">Training labels, dims [N].</param>
    /// <param name="testImages">Test images, dims [M, H, W].</param>
    /// <param name="testLabels">Test labels, dims [M].</param>
    /// <param name="source">Description of the source, stored in <see cref="Source"/>.</param>
    /// <exception cref="InvalidDataException">The shapes or counts disagree or a label is 10 or more.</exception>
    public static FashionMnist FromIdx(IdxArray trainImages, IdxArray trainLabels, IdxArray testImages, IdxArray testLabels, string source)
    {
        var train = Split(trainImages, trainLabels);
        var test = Split(testImages, testLabels);
        if (train.Height != test.Height || train.Width != test.Width)
        {
            throw new InvalidDataException(
                $"{source}: train images are {train.Height}x{train.Width} but test images are {test.Height}x{test.Width}");
        }

        return new FashionMnist(train, test, source);
    }

    private static ImageDataset Split(IdxArray images, IdxArray labels)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(labels);
        if (images.Rank != 3)
        {
            throw new InvalidDataException(
                $"{Idx.Label(images.Name)}image data must have 3 dimensions [count, height, width], found {Idx.FormatDims(images.Dims)}");
        }

        if (labels.Rank != 1)
        {
            throw new InvalidDataException(
                $"{Idx.Label(labels.Name)}label data must have 1 dimension [count], found {Idx.FormatDims(labels.Dims)}");
        }

        if (images.Count != labels.Count)
        {
            throw new InvalidDataException(
                $"{images.Name} holds {images.Count} images but {labels.Name} holds {labels.Count} labels");
        }

        return new ImageDataset(images.Data, labels.Data, images.Dims[1], images.Dims[2], ClassCount, Mean, Std, labels.Name);
    }

    private static string FindFile(string directory, string gzName)
    {
        var gz = Path.Combine(directory, gzName);
        if (File.Exists(gz))
        {
            return gz;
        }

        var raw = Path.Combine(directory, Path.GetFileNameWithoutExtension(gzName));
        if (File.Exists(raw))
        {
            return raw;
        }

        throw new FileNotFoundException(
            $"Fashion-MNIST file missing: {gz} (or raw {Path.GetFileName(raw)}); the folder {directory} must hold " +
            $"{string.Join(", ", FileNames)} (gzip or raw)", gz);
    }
}
