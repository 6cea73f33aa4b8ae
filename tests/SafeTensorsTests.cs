using System.Buffers.Binary;
using System.Text;
using Frugal.IO;

namespace Frugal.Tests;

/// <summary>safetensors files: round trip of every dtype, the layout other readers expect, atomic writes that
/// leave the old file on failure, and validation that refuses damaged files (1,000 fuzzed ones) with a clear
/// message instead of crashing or loading wrong values.</summary>
public class SafeTensorsTests
{
    private static string TempPath(string name) => Path.Combine(Path.GetTempPath(), $"frugal-{name}-{Environment.ProcessId}-{Guid.NewGuid():N}.safetensors");

    private static List<(string, Tensor)> Sample() =>
    [
        ("weight", Tensor.FromArray(new[] { 1.5f, -2f, 3.25f, 0f, 7f, -0.5f }, 2, 3)),
        ("codes", Tensor.FromArray(new byte[] { 1, 2, 255, 0, 9 }, 5)),
        ("index", Tensor.FromArray(new[] { 3, -1, 1 << 30 }, 3)),
        ("double", Tensor.FromArray(new[] { Math.PI, -1e300 }, 2)),
        ("empty", Tensor.FromArray(Array.Empty<float>(), 0, 4)),
        ("scalar", Tensor.FromArray(new[] { 42.0f }, [])),
    ];

    [Fact]
    public void RoundTripsEveryDTypeWithMetadata()
    {
        var path = TempPath("roundtrip");
        using var scope = TensorScope.Begin();
        var tensors = Sample();
        var half = Tensor.FromArray(new[] { 1f, -2.5f, 65504f }, 3);
        tensors.Add(("half", half.To(DType.F16)));
        tensors.Add(("bf16", half.To(DType.BF16)));
        tensors.Add(("i8", Tensor.FromArray(new[] { -3f, 127f }, 2).To(DType.I8)));
        try
        {
            SafeTensors.Write(path, tensors, new Dictionary<string, string> { ["step"] = "12", ["format"] = "q4" });
            using var file = SafeTensors.Read(path);
            Assert.True(file.Hashed);
            Assert.Equal("12", file.Meta("step"));
            foreach (var (name, t) in tensors)
            {
                var e = file.Entry(name);
                Assert.Equal((t.DType, t.Shape), (e.DType, e.Shape));
                using var back = file.ToTensor(name);
                using var a = t.To(DType.F64);
                using var b = back.To(DType.F64);
                Assert.Equal(a.ToArray<double>(), b.ToArray<double>());
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void LayoutIsTheSpecs()
    {
        var path = TempPath("layout");
        using var scope = TensorScope.Begin();
        try
        {
            SafeTensors.Write(path, [("a", Tensor.FromArray(new[] { 1f, 2f }, 2)), ("b", Tensor.FromArray(new byte[] { 7 }, 1))]);
            var bytes = File.ReadAllBytes(path);
            var n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.Equal(0, (8 + n) % 8);
            var header = Encoding.UTF8.GetString(bytes, 8, n);
            Assert.StartsWith("{", header, StringComparison.Ordinal);
            Assert.Contains("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", header, StringComparison.Ordinal);
            Assert.Contains("\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[8,9]}", header, StringComparison.Ordinal);
            Assert.Equal(8 + n + 9, bytes.Length);
            Assert.Equal(BitConverter.GetBytes(2f), bytes[(8 + n + 4)..(8 + n + 8)]);
            Assert.Equal(7, bytes[^1]);
            // A file of another writer, without our hash, reads too.
            var plain = Encoding.UTF8.GetBytes("{\"x\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
            var other = new byte[8 + plain.Length + 4];
            BinaryPrimitives.WriteUInt64LittleEndian(other, (ulong)plain.Length);
            plain.CopyTo(other, 8);
            BinaryPrimitives.WriteInt32LittleEndian(other.AsSpan(8 + plain.Length), -5);
            var file = SafeTensors.Parse("other", other);
            Assert.False(file.Hashed);
            Assert.Contains("not written by Frugal", Assert.Throws<SafeTensorsException>(() => SafeTensors.Parse("other", other, requireHash: true)).Message, StringComparison.Ordinal);
            using var x = file.ToTensor("x");
            Assert.Equal([-5], x.ToArray<int>());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AFailedWriteLeavesTheOldFileAndNoTemporary()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"frugal-atomic-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "model.safetensors");
        using var scope = TensorScope.Begin();
        try
        {
            SafeTensors.Write(path, [("w", Tensor.FromArray(new[] { 1f }, 1))]);
            var before = File.ReadAllBytes(path);
            var disposed = Tensor.FromArray(new[] { 2f }, 1);
            disposed.Dispose();
            Assert.ThrowsAny<ObjectDisposedException>(() => SafeTensors.Write(path, [("w", Tensor.FromArray(new[] { 3f }, 1)), ("v", disposed)]));
            Assert.Equal(before, File.ReadAllBytes(path));
            Assert.Contains("repeated", Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, [("w", disposed), ("w", disposed)])).Message, StringComparison.Ordinal);
            Assert.Equal(["model.safetensors"], Directory.GetFiles(dir).Select(Path.GetFileName));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void RefusesEachKindOfDamageByName()
    {
        static byte[] File(string header, int data)
        {
            var h = Encoding.UTF8.GetBytes(header);
            var bytes = new byte[8 + h.Length + data];
            BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)h.Length);
            h.CopyTo(bytes, 8);
            return bytes;
        }
        void Refused(byte[] bytes, string message)
            => Assert.Contains(message, Assert.Throws<SafeTensorsException>(() => SafeTensors.Parse("f.safetensors", bytes)).Message, StringComparison.Ordinal);
        Refused(new byte[5], "shorter than the 8-byte header length");
        Refused(File("{}", 0)[..9], "exceeds the file");
        Refused(File("{\"a\":", 0), "not valid UTF-8 JSON");
        var invalid = File("{\"x\":1}", 0);
        invalid[10] = 0xFF;   // the name's byte: not UTF-8
        Refused(invalid, "not valid UTF-8 JSON");
        Refused(File("[1]", 0), "not a JSON object");
        Refused(File("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "dtype 'F33'");
        Refused(File("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4), "holds 4 bytes, but F32 [2] needs 8");
        Refused(File("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "non-negative");
        Refused(File("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4), "outside [0, 4]");
        Refused(File("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "a gap or an overlap");
        Refused(File("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8), "cover 4 bytes of data but the file holds 8");
        Refused(File("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "appears twice");
        Refused(File("{\"__metadata__\":{\"k\":1}}", 0), "metadata 'k' is not a string");
    }

    [Fact]
    public void ThousandsOfFuzzedFilesAreRefusedOrReadIntact()
    {
        var path = TempPath("fuzz");
        byte[] good;
        using (var scope = TensorScope.Begin())
        {
            SafeTensors.Write(path, Sample(), new Dictionary<string, string> { ["step"] = "7" });
            good = System.IO.File.ReadAllBytes(path);
            System.IO.File.Delete(path);
        }
        var original = SafeTensors.Parse("good", good);
        var rng = new Random(1234);
        var (refused, intact) = (0, 0);
        for (var i = 0; i < 1500; i++)
        {
            var bytes = (byte[])good.Clone();
            switch (i % 3)
            {
                case 0:   // truncation
                    bytes = bytes[..rng.Next(bytes.Length)];
                    break;
                case 1:   // one to four random byte flips anywhere
                    for (var k = rng.Next(1, 5); k > 0; k--)
                        bytes[rng.Next(bytes.Length)] ^= (byte)rng.Next(1, 256);
                    break;
                default:  // a flip in the header length or the header itself
                    bytes[rng.Next(Math.Min(bytes.Length, 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(good)))] ^= (byte)(1 << rng.Next(8));
                    break;
            }
            SafeTensorsFile file;
            try
            {
                file = SafeTensors.Parse($"fuzz {i}", bytes, requireHash: true);
            }
            catch (SafeTensorsException e)
            {
                Assert.Contains($"safetensors fuzz {i}:", e.Message, StringComparison.Ordinal);
                refused++;
                continue;
            }
            // Read without complaint: then it must be the same content (a flip in the header's padding, say).
            Assert.Equal(original.Metadata.OrderBy(kv => kv.Key), file.Metadata.OrderBy(kv => kv.Key));
            Assert.Equal(original.Entries.Select(e => (e.Name, e.DType, e.Shape)).Order(), file.Entries.Select(e => (e.Name, e.DType, e.Shape)).Order());
            foreach (var e in original.Entries)
                Assert.True(original.Bytes(e.Name).SequenceEqual(file.Bytes(e.Name)), $"fuzz {i}: '{e.Name}' differs");
            intact++;
        }
        Assert.Equal(1500, refused + intact);
        Assert.True(refused > 1400, $"only {refused} of 1500 damaged files were refused");
    }

    [Fact]
    public void AFileStreamsThroughOneBufferAndIsReadInPlace_TheSameBytesWhateverTheChunk()
    {
        var (small, large) = (TempPath("chunks-small"), TempPath("chunks-large"));
        using var scope = TensorScope.Begin();
        List<(string, Tensor)> tensors = [("a", Tensor.Uniform(new Shape(625), -1, 1, 1)), ("b", Tensor.FromArray(new[] { 7, 8 }, 2)), ("c", Tensor.Uniform(new Shape(50, 50), -1, 1, 2).To(DType.F64))];
        try
        {
            // 1,000-byte chunks split every tensor but the smallest across several copies and hash updates.
            SafeTensors.Write(small, tensors, new Dictionary<string, string> { ["k"] = "v" }, chunkBytes: 1000);
            SafeTensors.Write(large, tensors, new Dictionary<string, string> { ["k"] = "v" });
            Assert.Equal(File.ReadAllBytes(large), File.ReadAllBytes(small));
            using (var file = SafeTensors.Read(small, requireHash: true, chunkBytes: 777))
            {
                foreach (var (name, t) in tensors)
                {
                    using var back = file.ToTensor(name);
                    using var a = t.To(DType.F64);
                    using var b = back.To(DType.F64);
                    Assert.Equal(a.ToArray<double>(), b.ToArray<double>());
                }
                Assert.Equal(2 * sizeof(int), file.Bytes("b").Length);
            }
            // A damaged byte in the middle of a chunk is still found.
            var bytes = File.ReadAllBytes(small);
            bytes[^3000] ^= 1;
            File.WriteAllBytes(small, bytes);
            Assert.Contains("do not match", Assert.Throws<SafeTensorsException>(() => SafeTensors.Read(small, requireHash: true, chunkBytes: 777)).Message, StringComparison.Ordinal);
            var mapped = SafeTensors.Read(large);
            mapped.Dispose();
            Assert.Throws<ObjectDisposedException>(() => mapped.Bytes("b").Length);
        }
        finally
        {
            File.Delete(small);
            File.Delete(large);
        }
    }

    [Fact]
    public void ACheckpointOverTwoGibibytesRoundTrips()
    {
        if (Environment.GetEnvironmentVariable("FRUGAL_LARGE_TESTS") != "1")
            Assert.Skip("run on demand: FRUGAL_LARGE_TESTS=1 writes and reads a 2.4 GB file (about 15 s, 8 GB of memory, 2.4 GB of disk)");
        var path = TempPath("large");
        const int values = 600_000_000;   // 2.4 GB of F32: more than an int can index in bytes
        using var big = Tensor.Uniform(new Shape(values), -1, 1, 3);
        using var tail = Tensor.FromArray(new[] { 1.5f, -2.5f }, 2);
        try
        {
            SafeTensors.Write(path, [("big", big), ("tail", tail)], new Dictionary<string, string> { ["what"] = "large" });
            Assert.True(new FileInfo(path).Length > (long)int.MaxValue);
            using var file = SafeTensors.Read(path, requireHash: true);
            Assert.Equal(new Shape(values), file.Entry("big").Shape);
            Assert.Equal([1.5f, -2.5f], file.Bytes("tail").ToArray().Chunk(4).Select(b => BitConverter.ToSingle(b)));
            Assert.Contains("more than one span", Assert.Throws<SafeTensorsException>(() => file.Bytes("big").Length).Message, StringComparison.Ordinal);
            using var back = file.ToTensor("big");
            using var diff = back - big;
            using var abs = diff.Abs();
            using var max = F.Max(abs, [0]);
            Assert.Equal(0, max.Item());
        }
        finally
        {
            File.Delete(path);
        }
    }
}
