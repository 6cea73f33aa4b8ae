using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Frugal.IO;

/// <summary>A safetensors file that cannot be read, naming the file and what is wrong; nothing was loaded.</summary>
public sealed class SafeTensorsException(string message) : IOException(message);

/// <summary>One tensor of a safetensors file: its name, dtype, shape and bytes within the data buffer.</summary>
public sealed record SafeTensorsEntry(string Name, DType DType, Shape Shape, long Begin, long End);

/// <summary>
/// The safetensors format (Hugging Face's): an 8-byte little-endian header length, a UTF-8 JSON header mapping each
/// tensor name to {dtype, shape, data_offsets} (plus "__metadata__", a string-to-string map), padded with spaces to
/// a multiple of 8 bytes, then the tensors' row-major little-endian bytes, in order, with no gaps. Files written here
/// are readable by any safetensors reader; they also carry "frugal.sha256" in the metadata, a SHA-256 over the
/// entries, the other metadata and the data, which <see cref="Read(string, bool)"/> checks, so a damaged file is refused rather
/// than loaded with wrong values.
/// </summary>
public static class SafeTensors
{
    /// <summary>The metadata key of the integrity hash.</summary>
    public const string HashKey = "frugal.sha256";

    /// <summary>The largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static readonly (DType DType, string Name)[] Names =
        [(DType.F32, "F32"), (DType.F64, "F64"), (DType.F16, "F16"), (DType.BF16, "BF16"), (DType.I8, "I8"), (DType.U8, "U8"), (DType.I32, "I32")];

    /// <summary>Writes <paramref name="tensors"/> and <paramref name="metadata"/> to <paramref name="path"/>
    /// atomically: a temporary file in the same folder, flushed to disk, then renamed over the path, so a crash or an
    /// error leaves the previous file (if any) untouched and no partial file behind.</summary>
    /// <exception cref="ArgumentException">A name is empty, repeated or reserved, or a metadata key is reserved.</exception>
    public static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
        => Write(path, tensors, metadata, ChunkBytes);

    /// <summary>Bytes copied from a device (written) or hashed (read) at a time: a file of any size passes through
    /// one buffer of this size.</summary>
    internal const int ChunkBytes = 16 << 20;

    /// <summary><see cref="Write(string, IReadOnlyList{ValueTuple{string, Tensor}}, IReadOnlyDictionary{string, string}?)"/>
    /// through a buffer of <paramref name="chunkBytes"/>.</summary>
    internal static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata, int chunkBytes)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _) in tensors)
        {
            if (string.IsNullOrEmpty(name) || name == "__metadata__" || !names.Add(name))
                throw new ArgumentException($"safetensors {path}: tensor name '{name}' is empty, reserved or repeated");
        }
        if (metadata?.ContainsKey(HashKey) == true)
            throw new ArgumentException($"safetensors {path}: metadata key '{HashKey}' is reserved");
        var (entries, offset) = Layout(tensors);
        var meta = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
            meta[k] = v;
        // The hash covers the data, which is streamed once: the header goes first with a placeholder of the hash's
        // length and is written again, the same size, once the hash is known.
        meta[HashKey] = new string('0', 64);
        var placeholder = Header(entries, meta);
        var full = Path.GetFullPath(path);
        var temp = Path.Combine(Path.GetDirectoryName(full) ?? ".", $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                Span<byte> length = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)placeholder.Length);
                stream.Write(length);
                stream.Write(placeholder);
                using var sha = StartHash(entries, meta);
                var buffer = new byte[(int)Math.Min(chunkBytes, Math.Max(offset, 1))];
                foreach (var (_, t) in tensors)
                {
                    using var c = t.Contiguous();
                    var total = c.Numel * c.DType.SizeOf();
                    for (long done = 0; done < total; done += buffer.Length)
                    {
                        var span = buffer.AsSpan(0, (int)Math.Min(buffer.Length, total - done));
                        t.Backend.Download(c.View.Data + (nint)done, span);
                        sha.AppendData(span);
                        stream.Write(span);
                    }
                }
                meta[HashKey] = Convert.ToHexStringLower(sha.GetHashAndReset());
                var header = Header(entries, meta);
                if (header.Length != placeholder.Length)
                    throw new InvalidOperationException($"safetensors {path}: the header changed size when its hash was filled in");
                stream.Position = 8;
                stream.Write(header);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>The header JSON, padded with spaces to a multiple of 8 bytes (so the data starts aligned).</summary>
    private static byte[] Header(List<SafeTensorsEntry> entries, SortedDictionary<string, string> metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            foreach (var (k, v) in metadata)
                json.WriteString(k, v);
            json.WriteEndObject();
            foreach (var e in entries)
            {
                json.WriteStartObject(e.Name);
                json.WriteString("dtype", NameOf(e.DType));
                json.WriteStartArray("shape");
                foreach (var d in e.Shape.Dims)
                    json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(e.Begin);
                json.WriteNumberValue(e.End);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        var padded = (buffer.Length + 8 + 7) / 8 * 8 - 8;
        while (buffer.Length < padded)
            buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    /// <summary>A SHA-256 started over the entries (name, dtype, shape, offsets) and the metadata except the hash;
    /// the data is appended to it.</summary>
    private static IncrementalHash StartHash(IEnumerable<SafeTensorsEntry> entries, IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var text = new StringBuilder();
        foreach (var e in entries.OrderBy(e => e.Name, StringComparer.Ordinal))
            text.Append(e.Name).Append('\0').Append(NameOf(e.DType)).Append('\0').Append(e.Shape).Append('\0').Append(e.Begin).Append('\0').Append(e.End).Append('\n');
        foreach (var (k, v) in metadata.Where(kv => kv.Key != HashKey).OrderBy(kv => kv.Key, StringComparer.Ordinal))
            text.Append(k).Append('\0').Append(v).Append('\n');
        sha.AppendData(Encoding.UTF8.GetBytes(text.ToString()));
        return sha;
    }

    private static string NameOf(DType dtype) => Names.First(n => n.DType == dtype).Name;

    /// <summary>Reads and validates the file at <paramref name="path"/>: the header's bounds and JSON, every entry's
    /// dtype, shape and offsets (shape × dtype size = byte length; offsets in order, without gaps or overlaps, covering
    /// the data exactly), and, when present, the integrity hash.
    /// With <paramref name="requireHash"/> (checkpoints) a file without the hash is refused too: one written by
    /// another tool, or whose hash entry itself was damaged.</summary>
    /// <exception cref="SafeTensorsException">Anything is wrong, naming the file and the entry.</exception>
    /// <exception cref="IOException">The file cannot be opened.</exception>
    public static SafeTensorsFile Read(string path, bool requireHash = false)
        => Read(path, requireHash, ChunkBytes);

    /// <summary><see cref="Read(string, bool)"/>, hashing <paramref name="chunkBytes"/> at a time.</summary>
    internal static SafeTensorsFile Read(string path, bool requireHash, int chunkBytes)
    {
        ArgumentNullException.ThrowIfNull(path);
        var source = ByteSource.Map(path);
        try
        {
            return Parse(path, source, requireHash, chunkBytes);
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    /// <summary>The entries of <paramref name="tensors"/> laid out in order, and the data's length.</summary>
    private static (List<SafeTensorsEntry> Entries, long Length) Layout(IReadOnlyList<(string Name, Tensor Tensor)> tensors)
    {
        var entries = new List<SafeTensorsEntry>();
        long offset = 0;
        foreach (var (name, t) in tensors)
        {
            var bytes = t.Numel * t.DType.SizeOf();
            entries.Add(new SafeTensorsEntry(name, t.DType, t.Shape, offset, offset + bytes));
            offset += bytes;
        }
        return (entries, offset);
    }

    /// <summary>The <paramref name="tensors"/> (at most 2 GiB in all) as an in-memory file, with
    /// <paramref name="metadata"/> and no hash: how a state dict is loaded through the checkpoint path.</summary>
    internal static SafeTensorsFile InMemory(string source, IReadOnlyList<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        var (entries, offset) = Layout(tensors);
        var data = new byte[checked((int)offset)];
        for (var i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i].Tensor;
            using var c = t.Contiguous();
            t.Backend.Download(c.View.Data, data.AsSpan((int)entries[i].Begin, (int)(entries[i].End - entries[i].Begin)));
        }
        return new SafeTensorsFile(source, entries, metadata, ByteSource.Of(data), 0, hashed: false);
    }

    /// <summary>Validates the bytes of a safetensors file (see <see cref="Read(string, bool)"/>); <paramref name="source"/> names it
    /// in messages.</summary>
    /// <exception cref="SafeTensorsException">Anything is wrong.</exception>
    public static SafeTensorsFile Parse(string source, byte[] bytes, bool requireHash = false)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        return Parse(source, ByteSource.Of(bytes), requireHash, ChunkBytes);
    }

    private static SafeTensorsFile Parse(string source, ByteSource bytes, bool requireHash, int chunkBytes)
    {
        SafeTensorsException Bad(string what) => new($"safetensors {source}: {what}");
        if (bytes.Length < 8)
            throw Bad($"{bytes.Length} bytes is shorter than the 8-byte header length");
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes.Slice(0, 8));
        if (headerLength > MaxHeaderBytes || headerLength > (ulong)bytes.Length - 8)
            throw Bad($"the header length {headerLength} exceeds the file ({bytes.Length} bytes) or the limit of {MaxHeaderBytes}");
        var dataStart = 8 + (long)headerLength;
        var dataLength = bytes.Length - dataStart;
        JsonDocument doc;
        try
        {
            var header = bytes.Slice(8, (int)headerLength).ToArray();
            StrictUtf8.GetCharCount(header);
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (Exception e) when (e is JsonException or DecoderFallbackException)
        {
            throw Bad($"the header is not valid UTF-8 JSON ({e.Message})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw Bad("the header is not a JSON object");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<SafeTensorsEntry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw Bad($"'{property.Name}' appears twice in the header");
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw Bad("__metadata__ is not an object");
                    foreach (var m in property.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String || !metadata.TryAdd(m.Name, m.Value.GetString()!))
                            throw Bad($"metadata '{m.Name}' is not a string, or repeated");
                    }
                    continue;
                }
                entries.Add(Entry(property, dataLength, Bad));
            }
            entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            long expected = 0;
            foreach (var e in entries)
            {
                if (e.Begin != expected)
                    throw Bad($"tensor '{e.Name}' starts at byte {e.Begin} of the data, expected {expected} (a gap or an overlap)");
                expected = e.End;
            }
            if (expected != dataLength)
                throw Bad($"the tensors cover {expected} bytes of data but the file holds {dataLength} after the header");
            if (requireHash && !metadata.ContainsKey(HashKey))
                throw Bad($"no {HashKey} in the metadata: not written by Frugal, or its header is damaged");
            if (metadata.TryGetValue(HashKey, out var hash))
            {
                using var sha = StartHash(entries, metadata);
                for (long done = 0; done < dataLength; done += chunkBytes)
                    sha.AppendData(bytes.Slice(dataStart + done, (int)Math.Min(chunkBytes, dataLength - done)));
                if (Convert.ToHexStringLower(sha.GetHashAndReset()) != hash)
                    throw Bad($"the contents do not match their {HashKey} hash: the file is damaged");
            }
            return new SafeTensorsFile(source, entries, metadata, bytes, dataStart, hash is not null);
        }
    }

    private static SafeTensorsEntry Entry(JsonProperty property, long dataLength, Func<string, SafeTensorsException> bad)
    {
        var name = property.Name;
        var v = property.Value;
        if (v.ValueKind != JsonValueKind.Object
            || !v.TryGetProperty("dtype", out var dtype) || dtype.ValueKind != JsonValueKind.String
            || !v.TryGetProperty("shape", out var shape) || shape.ValueKind != JsonValueKind.Array
            || !v.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw bad($"tensor '{name}' lacks a string dtype, a shape array or two data_offsets");
        var type = Names.FirstOrDefault(n => n.Name == dtype.GetString());
        if (type.Name is null)
            throw bad($"tensor '{name}' has dtype '{dtype.GetString()}', not one of {string.Join(", ", Names.Select(n => n.Name))}");
        var dims = new List<int>();
        long count = 1;
        foreach (var d in shape.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out var n) || n < 0)
                throw bad($"tensor '{name}' has a shape entry that is not a non-negative 32-bit integer");
            dims.Add(n);
            count = count * n > (long)int.MaxValue * 8 ? throw bad($"tensor '{name}' is too large") : count * n;
        }
        if (dims.Count > 8)
            throw bad($"tensor '{name}' has {dims.Count} dimensions; at most 8 are supported");
        if (!offsets[0].TryGetInt64(out var begin) || !offsets[1].TryGetInt64(out var end) || begin < 0 || end < begin || end > dataLength)
            throw bad($"tensor '{name}' has data_offsets outside [0, {dataLength}] or reversed");
        if (end - begin != count * type.DType.SizeOf())
            throw bad($"tensor '{name}' holds {end - begin} bytes, but {type.Name} [{string.Join(", ", dims)}] needs {count * type.DType.SizeOf()}");
        return new SafeTensorsEntry(name, type.DType, new Shape([.. dims]), begin, end);
    }
}

/// <summary>A validated safetensors file: its entries, metadata and data, memory-mapped when read from a file (so a
/// checkpoint of any size is read in place, a tensor at a time); disposing it unmaps the file.</summary>
public sealed class SafeTensorsFile : IDisposable
{
    private readonly ByteSource _bytes;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorsEntry> _entries;

    internal SafeTensorsFile(string source, IReadOnlyList<SafeTensorsEntry> entries, IReadOnlyDictionary<string, string> metadata, ByteSource bytes, long dataStart, bool hashed)
    {
        (Source, Entries, Metadata, _bytes, _dataStart, Hashed) = (source, entries, metadata, bytes, dataStart, hashed);
        _entries = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    /// <summary>The file it was read from.</summary>
    public string Source { get; }

    /// <summary>The tensors in data order.</summary>
    public IReadOnlyList<SafeTensorsEntry> Entries { get; }

    /// <summary>The header's "__metadata__".</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>True when the file carried an integrity hash (written by Frugal), which matched.</summary>
    public bool Hashed { get; }

    /// <summary>True when the file holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>The entry called <paramref name="name"/>.</summary>
    /// <exception cref="SafeTensorsException">There is none.</exception>
    public SafeTensorsEntry Entry(string name) => _entries.TryGetValue(name, out var e)
        ? e
        : throw new SafeTensorsException($"safetensors {Source}: no tensor '{name}'");

    /// <summary>The raw bytes of tensor <paramref name="name"/> (a span: at most 2 GiB; <see cref="ToTensor"/> takes
    /// any size).</summary>
    /// <exception cref="SafeTensorsException">There is no such tensor, or it holds more than a span can.</exception>
    public ReadOnlySpan<byte> Bytes(string name)
    {
        var e = Entry(name);
        if (e.End - e.Begin > int.MaxValue)
            throw new SafeTensorsException($"safetensors {Source}: tensor '{name}' holds {e.End - e.Begin} bytes, more than one span; use ToTensor");
        return _bytes.Slice(_dataStart + e.Begin, (int)(e.End - e.Begin));
    }

    /// <summary>Tensor <paramref name="name"/> as a new tensor on <paramref name="device"/>, copied from the file
    /// <see cref="SafeTensors.ChunkBytes"/> at a time.</summary>
    public Tensor ToTensor(string name, Device? device = null, Memory.MemoryCategory? category = null)
    {
        var e = Entry(name);
        var t = Tensor.Empty(e.Shape, e.DType, device, category);
        for (long done = 0; done < e.End - e.Begin; done += SafeTensors.ChunkBytes)
            t.Backend.Upload(_bytes.Slice(_dataStart + e.Begin + done, (int)Math.Min(SafeTensors.ChunkBytes, e.End - e.Begin - done)), t.Buffer.Address + (nint)done);
        return t;
    }

    /// <summary>The metadata value <paramref name="key"/>.</summary>
    /// <exception cref="SafeTensorsException">It is absent.</exception>
    public string Meta(string key) => Metadata.TryGetValue(key, out var v)
        ? v
        : throw new SafeTensorsException($"safetensors {Source}: no metadata '{key}'");

    /// <summary>Unmaps the file.</summary>
    public void Dispose() => _bytes.Dispose();
}

/// <summary>The bytes of a safetensors file: an array, or a read-only memory map of the file.</summary>
internal abstract class ByteSource : IDisposable
{
    /// <summary>Bytes held.</summary>
    public abstract long Length { get; }

    /// <summary><paramref name="count"/> bytes from <paramref name="offset"/>.</summary>
    public abstract ReadOnlySpan<byte> Slice(long offset, int count);

    /// <inheritdoc/>
    public abstract void Dispose();

    public static ByteSource Of(byte[] bytes) => new ArraySource(bytes);

    /// <summary>The file at <paramref name="path"/>, mapped read-only (an empty file is an empty array: a map cannot
    /// be empty).</summary>
    public static ByteSource Map(string path)
    {
        var length = new FileInfo(path).Length;
        return length == 0 ? new ArraySource([]) : new MappedSource(path, length);
    }

    private sealed class ArraySource(byte[] bytes) : ByteSource
    {
        public override long Length => bytes.Length;

        public override ReadOnlySpan<byte> Slice(long offset, int count) => bytes.AsSpan(checked((int)offset), count);

        public override void Dispose()
        {
        }
    }

    private sealed unsafe class MappedSource : ByteSource
    {
        private readonly System.IO.MemoryMappedFiles.MemoryMappedFile _map;
        private readonly System.IO.MemoryMappedFiles.MemoryMappedViewAccessor _view;
        private readonly byte* _base;

        public MappedSource(string path, long length)
        {
            Length = length;
            _map = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read);
            try
            {
                _view = _map.CreateViewAccessor(0, length, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read);
                byte* p = null;
                _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                _base = p + _view.PointerOffset;
            }
            catch
            {
                _view?.Dispose();
                _map.Dispose();
                throw;
            }
        }

        public override long Length { get; }

        public override ReadOnlySpan<byte> Slice(long offset, int count)
        {
            ObjectDisposedException.ThrowIf(_view.SafeMemoryMappedViewHandle.IsClosed, this);
            if (offset < 0 || count < 0 || offset + count > Length)
                throw new ArgumentOutOfRangeException(nameof(offset), $"bytes [{offset}, {offset + count}) are outside the {Length}-byte file");
            return new ReadOnlySpan<byte>(_base + offset, count);
        }

        public override void Dispose()
        {
            if (_view.SafeMemoryMappedViewHandle.IsClosed)
                return;
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _map.Dispose();
        }
    }
}
