using System.IO.Compression;
using Frugal.Data;
using Frugal.Models;

namespace Frugal.Tests;

public sealed class DataTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "frugal-data-tests-" + Guid.NewGuid().ToString("N"));

    public DataTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static byte[] Sequence(int n) => Enumerable.Range(0, n).Select(i => (byte)(i * 7)).ToArray();

    private static byte[] Bytes(int[] dims, byte[] data, bool compress = false)
    {
        using var ms = new MemoryStream();
        Idx.WriteUInt8(ms, dims, data, compress);
        return ms.ToArray();
    }

    private static byte[] Gzip(byte[] raw)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true))
        {
            gz.Write(raw);
        }

        return ms.ToArray();
    }

    private InvalidDataException ReadFails(string name, byte[] content)
    {
        var path = PathOf(name);
        File.WriteAllBytes(path, content);
        var e = Assert.Throws<InvalidDataException>(() => Idx.ReadUInt8(path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        return e;
    }

    // ---------------------------------------------------------------- IDX round trip

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Idx_round_trips_through_a_file(bool compress)
    {
        int[] dims = [3, 4, 5];
        var data = Sequence(60);
        var path = PathOf(compress ? "a-idx3-ubyte.gz" : "a-idx3-ubyte");
        Idx.WriteUInt8(path, dims, data, compress);

        var head = File.ReadAllBytes(path).AsSpan(0, 4).ToArray();
        Assert.Equal(compress ? new byte[] { 0x1F, 0x8B } : new byte[] { 0, 0, 0x08, 3 }, compress ? head[..2] : head);

        var back = Idx.ReadUInt8(path);
        Assert.Equal(dims, back.Dims);
        Assert.Equal(data, back.Data);
        Assert.Equal(3, back.Count);
        Assert.Equal(path, back.Name);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Idx_round_trips_through_a_non_seekable_stream(bool compress)
    {
        int[] dims = [7];
        var data = Sequence(7);
        using var stream = new OneByteAtATimeStream(Bytes(dims, data, compress));
        var back = Idx.ReadUInt8(stream, "labels");
        Assert.Equal(dims, back.Dims);
        Assert.Equal(data, back.Data);
    }

    [Fact]
    public void Idx_detects_gzip_by_magic_bytes_not_extension()
    {
        int[] dims = [2, 2];
        byte[] data = [1, 2, 3, 4];
        var gzNamedRaw = PathOf("raw.gz");
        var rawNamedGz = PathOf("compressed.bin");
        File.WriteAllBytes(gzNamedRaw, Bytes(dims, data));
        File.WriteAllBytes(rawNamedGz, Bytes(dims, data, compress: true));
        Assert.Equal(data, Idx.ReadUInt8(gzNamedRaw).Data);
        Assert.Equal(data, Idx.ReadUInt8(rawNamedGz).Data);
    }

    [Fact]
    public void Idx_writer_rejects_inconsistent_input()
    {
        using var ms = new MemoryStream();
        Assert.Throws<ArgumentException>(() => Idx.WriteUInt8(ms, [2, 3], new byte[5]));
        Assert.Throws<ArgumentException>(() => Idx.WriteUInt8(ms, [0, 3], []));
        Assert.Throws<ArgumentException>(() => Idx.WriteUInt8(ms, [], []));
        Assert.Throws<ArgumentException>(() => Idx.WriteUInt8(ms, [1, 1, 1, 1, 1], new byte[1]));
    }

    // ---------------------------------------------------------------- IDX errors

    [Fact]
    public void Wrong_magic_is_rejected()
    {
        var e = ReadFails("bad-magic-idx1-ubyte", [0x01, 0x00, 0x08, 0x01, 0, 0, 0, 1, 42]);
        Assert.Contains("magic", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unsupported_type_code_is_rejected()
    {
        var e = ReadFails("floats-idx1", [0x00, 0x00, 0x0D, 0x01, 0, 0, 0, 1, 0, 0, 0, 0]);
        Assert.Contains("0x0D", e.Message, StringComparison.Ordinal);
        Assert.Contains("unsigned byte", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Truncated_data_is_rejected(bool compress)
    {
        var raw = Bytes([3, 4], Sequence(12));
        var cut = raw[..^2];
        var e = ReadFails("truncated-idx2-ubyte" + (compress ? ".gz" : ""), compress ? Gzip(cut) : cut);
        Assert.Contains("expected 12 data bytes for dims [3, 4], found 10", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Truncated_gzip_stream_is_rejected()
    {
        var gz = Bytes([100, 10], Sequence(1000), compress: true);
        ReadFails("cut-gzip-idx2-ubyte.gz", gz[..(gz.Length / 2)]);
    }

    [Fact]
    public void Truncated_header_is_rejected()
    {
        ReadFails("short-header", [0x00, 0x00, 0x08]);
        var e = ReadFails("short-dims", [0x00, 0x00, 0x08, 0x03, 0, 0, 0, 2, 0, 0]);
        Assert.Contains("header truncated", e.Message, StringComparison.Ordinal);
        ReadFails("empty", []);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Trailing_bytes_are_rejected(bool compress)
    {
        byte[] raw = [.. Bytes([3, 4], Sequence(12)), 9, 9, 9];
        var e = ReadFails("trailing-idx2-ubyte", compress ? Gzip(raw) : raw);
        Assert.Contains("expected 12 data bytes for dims [3, 4], found 15", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Zero_dimension_is_rejected()
    {
        var e = ReadFails("zero-dim-idx2-ubyte", [0x00, 0x00, 0x08, 0x02, 0, 0, 0, 0, 0, 0, 0, 28]);
        Assert.Contains("dimension 0", e.Message, StringComparison.Ordinal);
        Assert.Contains("positive", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Negative_dimension_is_rejected()
    {
        var e = ReadFails("negative-dim", [0x00, 0x00, 0x08, 0x01, 0xFF, 0xFF, 0xFF, 0xFF]);
        Assert.Contains("-1", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    public void Rank_outside_1_to_4_is_rejected(int rank)
    {
        byte[] content = [0x00, 0x00, 0x08, (byte)rank, .. Enumerable.Repeat((byte)0, 4 * rank)];
        var e = ReadFails("rank-idx", content);
        Assert.Contains($"{rank} dimensions", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_file_throws_FileNotFound_naming_the_path()
    {
        var path = PathOf("no-such-idx3-ubyte.gz");
        var e = Assert.Throws<FileNotFoundException>(() => Idx.ReadUInt8(path));
        Assert.Equal(path, e.FileName);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Stream_errors_name_the_stream()
    {
        using var ms = new MemoryStream([0x01, 0x02, 0x08, 0x01]);
        var e = Assert.Throws<InvalidDataException>(() => Idx.ReadUInt8(ms, "my-resource.gz"));
        Assert.StartsWith("my-resource.gz: ", e.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- Fashion-MNIST folder loading

    /// <summary>Writes a tiny Fashion-MNIST-shaped folder: 6 train and 4 test images of 2x3 pixels.</summary>
    private string WriteTinyFolder(bool compress, byte[]? trainLabels = null, int testCount = 4)
    {
        var dir = PathOf(compress ? "tiny-gz" : "tiny-raw");
        Directory.CreateDirectory(dir);
        string Name(int i) => compress ? FashionMnist.FileNames[i] : Path.GetFileNameWithoutExtension(FashionMnist.FileNames[i]);
        trainLabels ??= [0, 1, 2, 3, 9, 9];
        Idx.WriteUInt8(Path.Combine(dir, Name(0)), [6, 2, 3], Sequence(36), compress);
        Idx.WriteUInt8(Path.Combine(dir, Name(1)), [trainLabels.Length], trainLabels, compress);
        Idx.WriteUInt8(Path.Combine(dir, Name(2)), [4, 2, 3], Sequence(24), compress);
        Idx.WriteUInt8(Path.Combine(dir, Name(3)), [testCount], Enumerable.Range(0, testCount).Select(i => (byte)(i % 10)).ToArray(), compress);
        return dir;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Folder_with_raw_or_gzip_files_loads(bool compress)
    {
        var dir = WriteTinyFolder(compress);
        var ds = FashionMnist.Load(dir);
        Assert.Equal(dir, ds.Source);
        Assert.Equal(6, ds.Train.Count);
        Assert.Equal(4, ds.Test.Count);
        Assert.Equal(2, ds.Train.Height);
        Assert.Equal(3, ds.Train.Width);
        Assert.Equal(10, ds.Train.Classes);
        Assert.Equal(Sequence(36), ds.Train.Pixels);
        Assert.Equal(new byte[] { 0, 1, 2, 3, 9, 9 }, ds.Train.Labels);
        Assert.Equal([1, 1, 1, 1, 0, 0, 0, 0, 0, 2], ds.Train.ClassCounts());
        Assert.Equal(Sequence(36).AsSpan(6, 6).ToArray(), ds.Train.Image(1).ToArray());
    }

    [Fact]
    public void Missing_folder_throws_DirectoryNotFound_listing_expected_files()
    {
        var dir = PathOf("does-not-exist");
        var e = Assert.Throws<DirectoryNotFoundException>(() => FashionMnist.Load(dir));
        Assert.Contains(dir, e.Message, StringComparison.Ordinal);
        foreach (var name in FashionMnist.FileNames)
        {
            Assert.Contains(name, e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Missing_file_in_folder_throws_FileNotFound_listing_expected_files()
    {
        var dir = WriteTinyFolder(compress: true);
        File.Delete(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"));
        var e = Assert.Throws<FileNotFoundException>(() => FashionMnist.Load(dir));
        Assert.Equal(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"), e.FileName);
        Assert.Contains(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"), e.Message, StringComparison.Ordinal);
        foreach (var name in FashionMnist.FileNames)
        {
            Assert.Contains(name, e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Label_out_of_range_is_rejected()
    {
        var dir = WriteTinyFolder(compress: false, trainLabels: [0, 1, 2, 10, 4, 5]);
        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir));
        Assert.Contains("train-labels-idx1-ubyte", e.Message, StringComparison.Ordinal);
        Assert.Contains("label 10 at index 3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Image_and_label_counts_must_agree()
    {
        var dir = WriteTinyFolder(compress: false, testCount: 5);
        var e = Assert.Throws<InvalidDataException>(() => FashionMnist.Load(dir));
        Assert.Contains("4 images", e.Message, StringComparison.Ordinal);
        Assert.Contains("5 labels", e.Message, StringComparison.Ordinal);
        Assert.Contains("t10k-labels-idx1-ubyte", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_without_folder_uses_default_folder_then_fallback()
    {
        var tiny = WriteTinyFolder(compress: true);
        var absent = PathOf("no-default");

        Assert.Equal(tiny, FashionMnist.Load(null, null, tiny).Source);

        var fallback = FashionMnist.Load(tiny);
        var used = FashionMnist.Load(null, () => new FashionMnist(fallback.Train, fallback.Test, "fallback"), absent);
        Assert.Equal("fallback", used.Source);

        var e = Assert.Throws<DirectoryNotFoundException>(() => FashionMnist.Load(null, null, absent));
        Assert.Contains(absent, e.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- normalization

    [Fact]
    public void FillPixels_matches_hand_computed_values()
    {
        byte[] pixels = [0, 128, 255, 7, 200, 51];
        var ds = new ImageDataset(pixels, [3, 8], height: 1, width: 3, classes: 10, FashionMnist.Mean, FashionMnist.Std);

        var std = new float[6];
        ds.FillPixels([1, 0], std);
        // Image 1 first: pixel (image 1, x=1) = 200 -> (200/255 - 0.2860) / 0.3530 = 1.411654...
        Assert.Equal(((200.0 / 255.0) - 0.2860) / 0.3530, std[1], 5);
        Assert.Equal(1.411654, std[1], 5);
        // pixel (image 0, x=0) = 0 -> -0.2860 / 0.3530 = -0.810198...
        Assert.Equal(-0.810198, std[3], 5);
        Assert.Equal((1.0 - 0.2860) / 0.3530, std[5], 5);

        var unit = new float[6];
        ds.FillPixels([1, 0], unit, PixelNormalization.UnitRange);
        Assert.Equal(200f / 255f, unit[1]);
        Assert.Equal(128f / 255f, unit[4]);

        var none = new float[6];
        ds.FillPixels([1, 0], none, PixelNormalization.None);
        Assert.Equal([7f, 200f, 51f, 0f, 128f, 255f], none);

        var labels = new int[3];
        ds.FillLabels([1, 0, 1], labels);
        Assert.Equal([8, 3, 8], labels);
    }

    [Fact]
    public void Fill_checks_indices_and_destination()
    {
        var ds = new ImageDataset(new byte[8], [0, 1], 2, 2, 10, FashionMnist.Mean, FashionMnist.Std);
        Assert.Throws<ArgumentOutOfRangeException>(() => ds.FillPixels([2], new float[4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => ds.FillPixels([-1], new float[4]));
        Assert.Throws<ArgumentException>(() => ds.FillPixels([0, 1], new float[7]));
        Assert.Throws<ArgumentOutOfRangeException>(() => ds.FillLabels([5], new int[1]));
        Assert.Throws<ArgumentException>(() => ds.FillLabels([0, 1], new int[1]));
    }

    // ---------------------------------------------------------------- embedded slice

    [Fact]
    public void Embedded_slice_loads_class_balanced()
    {
        var ds = EmbeddedData.FashionMnistSlice();
        Assert.Equal("embedded slice of Fashion-MNIST", ds.Source);
        Assert.Equal(10000, ds.Train.Count);
        Assert.Equal(2000, ds.Test.Count);
        Assert.Equal(28, ds.Train.Height);
        Assert.Equal(28, ds.Train.Width);
        Assert.Equal(10000 * 784, ds.Train.Pixels.Length);
        Assert.Equal(2000 * 784, ds.Test.Pixels.Length);
        Assert.All(ds.Train.ClassCounts(), c => Assert.Equal(1000, c));
        Assert.All(ds.Test.ClassCounts(), c => Assert.Equal(200, c));
        Assert.Equal(10, FashionMnist.ClassNames.Count);

        // Real images: both black and white pixels occur, and the mean is near the dataset mean.
        Assert.Equal(0, ds.Train.Pixels.Min());
        Assert.Equal(255, ds.Train.Pixels.Max());
        var mean = ds.Train.Pixels.Average(b => b / 255.0);
        Assert.InRange(mean, 0.25, 0.32);

        var batch = new float[3 * 784];
        ds.Test.FillPixels([0, 1999, 1000], batch);
        var lo = (0 - FashionMnist.Mean) / FashionMnist.Std;
        var hi = (1 - FashionMnist.Mean) / FashionMnist.Std;
        Assert.All(batch, v => Assert.InRange(v, lo - 1e-6f, hi + 1e-6f));
    }

    [Fact]
    public void LoadFashionMnist_prefers_an_explicit_folder()
    {
        var dir = WriteTinyFolder(compress: true);
        Assert.Equal(dir, EmbeddedData.LoadFashionMnist(dir).Source);
    }

    // ---------------------------------------------------------------- Debian package data

    private static void SkipUnlessDebianData()
    {
        if (!Directory.Exists(FashionMnist.DefaultDirectory))
        {
            Assert.Skip($"{FashionMnist.DefaultDirectory} not installed (Debian package dataset-fashion-mnist)");
        }
    }

    [Fact]
    public void Debian_data_loads_in_full()
    {
        SkipUnlessDebianData();
        var ds = FashionMnist.Load();
        Assert.Equal(FashionMnist.DefaultDirectory, ds.Source);
        Assert.Equal(60000, ds.Train.Count);
        Assert.Equal(10000, ds.Test.Count);
        Assert.Equal(28, ds.Test.Height);
        Assert.Equal(28, ds.Test.Width);
        Assert.All(ds.Train.Labels, y => Assert.InRange(y, 0, 9));
        Assert.All(ds.Test.Labels, y => Assert.InRange(y, 0, 9));
        Assert.All(ds.Train.ClassCounts(), c => Assert.Equal(6000, c));
        Assert.All(ds.Test.ClassCounts(), c => Assert.Equal(1000, c));

        var mean = ds.Train.Pixels.Average(b => b / 255.0);
        Assert.Equal(FashionMnist.Mean, mean, 3);
    }

    [Fact]
    public void Embedded_slice_is_the_first_images_of_each_class_of_the_Debian_data()
    {
        SkipUnlessDebianData();
        var full = FashionMnist.Load();
        var slice = EmbeddedData.FashionMnistSlice();
        AssertFirstPerClass(full.Train, slice.Train, 1000);
        AssertFirstPerClass(full.Test, slice.Test, 200);

        static void AssertFirstPerClass(ImageDataset full, ImageDataset slice, int perClass)
        {
            var taken = new int[10];
            var j = 0;
            for (var i = 0; i < full.Count && j < slice.Count; i++)
            {
                var y = full.Labels[i];
                if (taken[y]++ < perClass)
                {
                    Assert.Equal(y, slice.Labels[j]);
                    Assert.True(full.Image(i).SequenceEqual(slice.Image(j)), $"slice image {j} differs from full image {i}");
                    j++;
                }
            }

            Assert.Equal(slice.Count, j);
        }
    }

    /// <summary>Non-seekable stream that returns at most one byte per read, to exercise partial reads.</summary>
    private sealed class OneByteAtATimeStream(byte[] data) : Stream
    {
        private int _pos;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (_pos >= data.Length || buffer.IsEmpty)
            {
                return 0;
            }

            buffer[0] = data[_pos++];
            return 1;
        }
    }
}
