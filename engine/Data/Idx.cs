using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;

namespace Frugal.Data;

/// <summary>An n-dimensional array of unsigned bytes read from (or to be written to) an IDX file.</summary>
public sealed class IdxArray
{
    /// <summary>Wraps existing dimensions and data (no copy).</summary>
    /// <param name="dims">Dimensions, outermost first; each must be positive.</param>
    /// <param name="data">Row-major data; its length must equal the product of <paramref name="dims"/>.</param>
    /// <param name="name">File path or stream name the data came from, used in error messages.</param>
    /// <exception cref="ArgumentException">The dimensions are empty, non-positive, or disagree with the data length.</exception>
    public IdxArray(int[] dims, byte[] data, string name = "")
    {
        ArgumentNullException.ThrowIfNull(dims);
        ArgumentNullException.ThrowIfNull(data);
        var count = Idx.CheckedElementCount(dims, name, static m => new ArgumentException(m, nameof(dims)));
        if (count != data.LongLength)
        {
            throw new ArgumentException(
                $"{Idx.Label(name)}expected {count} data bytes for dims {Idx.FormatDims(dims)}, found {data.LongLength}", nameof(data));
        }

        Dims = dims;
        Data = data;
        Name = name ?? "";
    }

    /// <summary>Dimensions, outermost first (e.g. [60000, 28, 28] for an image file).</summary>
    public int[] Dims { get; }

    /// <summary>Row-major element data; length is the product of <see cref="Dims"/>.</summary>
    public byte[] Data { get; }

    /// <summary>File path or stream name the array was read from ("" if built in memory).</summary>
    public string Name { get; }

    /// <summary>Number of dimensions (1..4).</summary>
    public int Rank => Dims.Length;

    /// <summary>Size of the outermost dimension (e.g. the number of images).</summary>
    public int Count => Dims[0];
}

/// <summary>
/// Reads and writes IDX files, the format of MNIST and Fashion-MNIST: two zero bytes, a type code,
/// the number of dimensions, each dimension as a big-endian int32, then the row-major data.
/// Files may be raw or gzip-compressed; compression is detected from the gzip magic bytes (1F 8B),
/// not from the file extension.
/// </summary>
public static class Idx
{
    /// <summary>Type code of unsigned byte data, the only element type Frugal reads.</summary>
    public const byte TypeUInt8 = 0x08;

    /// <summary>Largest number of dimensions accepted.</summary>
    public const int MaxRank = 4;

    /// <summary>Reads an unsigned-byte IDX file, raw or gzip-compressed.</summary>
    /// <param name="path">File path; it appears in every error message.</param>
    /// <returns>The dimensions and data of the file.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is malformed, truncated, has trailing bytes or an unsupported type.</exception>
    public static IdxArray ReadUInt8(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"IDX file not found: {path}", path);
        }

        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return ReadUInt8(stream, path);
    }

    /// <summary>Reads an unsigned-byte IDX array from a stream, raw or gzip-compressed, to its end.</summary>
    /// <param name="stream">Source stream, positioned at the start of the IDX data; it is read to the end but not disposed.</param>
    /// <param name="name">Name used in error messages (a file path or resource name).</param>
    /// <returns>The dimensions and data.</returns>
    /// <exception cref="InvalidDataException">The data is malformed, truncated, has trailing bytes or an unsupported type.</exception>
    public static IdxArray ReadUInt8(Stream stream, string name)
    {
        ArgumentNullException.ThrowIfNull(stream);
        name ??= "";

        Span<byte> head = stackalloc byte[2];
        var got = stream.ReadAtLeast(head, 2, throwOnEndOfStream: false);
        var prefixed = new PrefixedStream(head[..got].ToArray(), stream);
        var isGzip = got == 2 && head[0] == 0x1F && head[1] == 0x8B;
        try
        {
            if (isGzip)
            {
                using var gz = new GZipStream(prefixed, CompressionMode.Decompress, leaveOpen: true);
                return ReadBody(gz, name, compressed: true);
            }

            return ReadBody(prefixed, name, compressed: false);
        }
        catch (InvalidDataException e) when (!e.Data.Contains(OwnErrorKey))
        {
            throw new InvalidDataException($"{Label(name)}corrupt gzip data: {e.Message}", e);
        }
    }

    /// <summary>Writes an unsigned-byte IDX array to a stream, optionally gzip-compressed.</summary>
    /// <param name="stream">Destination; it is not disposed.</param>
    /// <param name="dims">Dimensions, outermost first: 1..4 positive values.</param>
    /// <param name="data">Row-major data; its length must equal the product of <paramref name="dims"/>.</param>
    /// <param name="compress">Whether to gzip the output (optimal compression).</param>
    /// <exception cref="ArgumentException">The dimensions are invalid or disagree with the data length.</exception>
    public static void WriteUInt8(Stream stream, int[] dims, ReadOnlySpan<byte> data, bool compress = false)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(dims);
        if (dims.Length is < 1 or > MaxRank)
        {
            throw new ArgumentException($"IDX arrays need 1..{MaxRank} dimensions, got {dims.Length}", nameof(dims));
        }

        var count = CheckedElementCount(dims, "", static m => new ArgumentException(m, nameof(dims)));
        if (count != data.Length)
        {
            throw new ArgumentException($"expected {count} data bytes for dims {FormatDims(dims)}, got {data.Length}", nameof(data));
        }

        var header = new byte[4 + (4 * dims.Length)];
        header[2] = TypeUInt8;
        header[3] = (byte)dims.Length;
        for (var i = 0; i < dims.Length; i++)
        {
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4 + (4 * i)), dims[i]);
        }

        if (compress)
        {
            using var gz = new GZipStream(stream, CompressionLevel.SmallestSize, leaveOpen: true);
            gz.Write(header);
            gz.Write(data);
        }
        else
        {
            stream.Write(header);
            stream.Write(data);
        }
    }

    /// <summary>Writes an unsigned-byte IDX file, optionally gzip-compressed, replacing any existing file.</summary>
    /// <param name="path">Destination file path.</param>
    /// <param name="dims">Dimensions, outermost first: 1..4 positive values.</param>
    /// <param name="data">Row-major data; its length must equal the product of <paramref name="dims"/>.</param>
    /// <param name="compress">Whether to gzip the output.</param>
    public static void WriteUInt8(string path, int[] dims, ReadOnlySpan<byte> data, bool compress = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        WriteUInt8(stream, dims, data, compress);
    }

    private static IdxArray ReadBody(Stream s, string name, bool compressed)
    {
        var label = Label(name);
        var what = compressed ? "gzip-compressed IDX data" : "IDX data";
        Span<byte> magic = stackalloc byte[4];
        var got = s.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        if (got < 4)
        {
            throw Error($"{label}{what} is too short for an IDX header ({got} of 4 magic bytes)");
        }

        if (magic[0] != 0 || magic[1] != 0)
        {
            throw Error(
                $"{label}bad IDX magic: first two bytes must be 00 00, found {magic[0]:X2} {magic[1]:X2} (not an IDX file?)");
        }

        if (magic[2] != TypeUInt8)
        {
            throw Error(
                $"{label}unsupported IDX type code 0x{magic[2]:X2} ({TypeName(magic[2])}); only 0x08 (unsigned byte) is supported");
        }

        int rank = magic[3];
        if (rank is < 1 or > MaxRank)
        {
            throw Error($"{label}IDX data has {rank} dimensions; 1..{MaxRank} are supported");
        }

        Span<byte> dimBytes = stackalloc byte[4 * MaxRank];
        dimBytes = dimBytes[..(4 * rank)];
        got = s.ReadAtLeast(dimBytes, dimBytes.Length, throwOnEndOfStream: false);
        if (got < dimBytes.Length)
        {
            throw Error($"{label}IDX header truncated: expected {rank} dimensions ({dimBytes.Length} bytes), found {got} bytes");
        }

        var dims = new int[rank];
        for (var i = 0; i < rank; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(dimBytes[(4 * i)..]);
        }

        var count = CheckedElementCount(dims, name, static m => Error(m));
        var data = new byte[count];
        var read = s.ReadAtLeast(data, data.Length, throwOnEndOfStream: false);
        if (read < data.Length)
        {
            throw Error(
                $"{label}expected {count} data bytes for dims {FormatDims(dims)}, found {read} (file truncated)");
        }

        var trailing = CountRemaining(s);
        if (trailing > 0)
        {
            throw Error(
                $"{label}expected {count} data bytes for dims {FormatDims(dims)}, found {count + trailing} ({trailing} trailing bytes)");
        }

        return new IdxArray(dims, data, name);
    }

    /// <summary>Key marking exceptions raised by this reader, so gzip errors can be told apart and given the file name.</summary>
    private const string OwnErrorKey = "Frugal.Data.Idx";

    private static InvalidDataException Error(string message)
    {
        var e = new InvalidDataException(message);
        e.Data[OwnErrorKey] = true;
        return e;
    }

    private static long CountRemaining(Stream s)
    {
        var buffer = new byte[8192];
        long total = 0;
        int n;
        while ((n = s.Read(buffer)) > 0)
        {
            total += n;
        }

        return total;
    }

    internal static long CheckedElementCount(int[] dims, string name, Func<string, Exception> error)
    {
        if (dims.Length == 0)
        {
            throw error($"{Label(name)}IDX arrays need at least one dimension");
        }

        long count = 1;
        for (var i = 0; i < dims.Length; i++)
        {
            if (dims[i] <= 0)
            {
                throw error($"{Label(name)}dimension {i} of dims {FormatDims(dims)} is {dims[i]}; dimensions must be positive");
            }

            count *= dims[i];
            if (count > Array.MaxLength)
            {
                throw error($"{Label(name)}dims {FormatDims(dims)} describe more than {Array.MaxLength} bytes, too large to load");
            }
        }

        return count;
    }

    internal static string FormatDims(int[] dims) =>
        "[" + string.Join(", ", dims.Select(d => d.ToString(CultureInfo.InvariantCulture))) + "]";

    internal static string Label(string? name) => string.IsNullOrEmpty(name) ? "" : name + ": ";

    private static string TypeName(byte code) => code switch
    {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "int16",
        0x0C => "int32",
        0x0D => "float32",
        0x0E => "float64",
        _ => "unknown type",
    };

    /// <summary>Read-only stream that replays a few already-consumed bytes before the rest of an inner stream.</summary>
    private sealed class PrefixedStream(byte[] prefix, Stream inner) : Stream
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
            if (_pos < prefix.Length)
            {
                var n = Math.Min(buffer.Length, prefix.Length - _pos);
                prefix.AsSpan(_pos, n).CopyTo(buffer);
                _pos += n;
                return n;
            }

            return inner.Read(buffer);
        }
    }
}
