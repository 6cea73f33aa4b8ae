using System.IO.Compression;
using System.Reflection.Metadata;
using System.Text;

namespace Frugal.Tests;

/// <summary>What the packages give a user who debugs into them: the engine's and the CLI's portable PDBs (shipped
/// as .snupkg) embed every source file of their project as it is on disk, so stepping into Frugal works without a
/// source server. (SourceLink's URLs need a hosted origin; <c>.ci/run</c> checks them from a clone with one.)</summary>
public class PackageTests
{
    private static readonly Guid EmbeddedSource = new("0E8A571B-6926-466E-B4AD-8AB04611F5FE");

    [Theory]
    [InlineData(typeof(Tensor), "engine")]
    [InlineData(typeof(Models.FrugalCli), "models")]
    public void ThePdbEmbedsEverySourceFileOfItsProject(Type type, string project)
    {
        var root = Path.Combine(TestUtil.CheckoutRoot(), project);
        var embedded = EmbeddedSources(Path.ChangeExtension(type.Assembly.Location, ".pdb"));
        var onDisk = Directory.GetFiles(root, "*.cs", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Where(f => !f.StartsWith("obj/", StringComparison.Ordinal) && !f.StartsWith("bin/", StringComparison.Ordinal))
            .ToList();
        Assert.NotEmpty(onDisk);
        foreach (var file in onDisk)
        {
            var key = embedded.Keys.SingleOrDefault(k => k.EndsWith($"/{project}/{file}", StringComparison.Ordinal));
            Assert.True(key is not null, $"{project}/{file} is not embedded in {type.Assembly.GetName().Name}.pdb");
            Assert.Equal(File.ReadAllText(Path.Combine(root, file)), embedded[key]);
        }
    }

    /// <summary>Document path → embedded text of a portable PDB (the blob: a 4-byte uncompressed length, 0 when
    /// the bytes follow as they are, else deflated bytes).</summary>
    private static Dictionary<string, string> EmbeddedSources(string pdb)
    {
        using var stream = File.OpenRead(pdb);
        using var provider = MetadataReaderProvider.FromPortablePdbStream(stream);
        var reader = provider.GetMetadataReader();
        var sources = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var handle in reader.Documents)
        {
            var name = reader.GetString(reader.GetDocument(handle).Name).Replace('\\', '/');
            foreach (var cdi in reader.GetCustomDebugInformation(handle))
            {
                var info = reader.GetCustomDebugInformation(cdi);
                if (reader.GetGuid(info.Kind) != EmbeddedSource)
                    continue;
                var blob = reader.GetBlobBytes(info.Value);
                var length = BitConverter.ToInt32(blob, 0);
                byte[] bytes;
                if (length == 0)
                {
                    bytes = blob[4..];
                }
                else
                {
                    bytes = new byte[length];
                    using var deflate = new DeflateStream(new MemoryStream(blob, 4, blob.Length - 4), CompressionMode.Decompress);
                    deflate.ReadExactly(bytes);
                }
                sources[name] = new StreamReader(new MemoryStream(bytes), Encoding.UTF8, detectEncodingFromByteOrderMarks: true).ReadToEnd();
            }
        }
        return sources;
    }
}
