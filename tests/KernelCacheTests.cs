using Frugal.Backends.Cuda;

namespace Frugal.Tests;

/// <summary>The kernel cache's keying, disk format and failure handling, with a fake compiler (NVRTC itself needs
/// the CUDA toolkit; the GPU bundle exercises it).</summary>
public sealed class KernelCacheTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "frugal-kernel-cache-" + Guid.NewGuid().ToString("N"));

    private sealed class FakeCompiler(string version = "fake 1.0") : IKernelCompiler
    {
        public List<(string Name, IReadOnlyList<string> Options, IReadOnlyDictionary<string, string> Headers)> Calls { get; } = [];

        public string Version { get; set; } = version;

        public Func<string, byte[]>? Output { get; set; }

        public byte[] Compile(string name, string source, IReadOnlyDictionary<string, string> headers, IReadOnlyList<string> options)
        {
            Calls.Add((name, options, headers));
            if (source.Contains("syntax error", StringComparison.Ordinal))
                throw new KernelCompileException($"{name}: error: expected ';'");
            return Output?.Invoke(source) ?? [0x7F, (byte)'E', (byte)'L', (byte)'F', .. System.Text.Encoding.UTF8.GetBytes(source)];
        }
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir))
            Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void CompilesOnceThenReadsFromDisk_AcrossCacheInstances()
    {
        var compiler = new FakeCompiler();
        var source = KernelSources.Read("elementwise.cu");
        var first = new KernelCache(_dir, compiler).Cubin("elementwise.cu", source, "sm_90");
        var again = new KernelCache(_dir, compiler);
        Assert.Equal(first, again.Cubin("elementwise.cu", source, "sm_90"));
        Assert.Single(compiler.Calls);
        Assert.Equal(0, again.Compilations);
        Assert.Equal(["--gpu-architecture=sm_90", "-std=c++17"], compiler.Calls[0].Options);
        Assert.Contains("common.cuh", compiler.Calls[0].Headers.Keys);
        var file = Assert.Single(Directory.GetFiles(_dir));
        Assert.Matches(@"elementwise_cu-sm_90-[0-9a-f]{20}\.cubin$", file);
    }

    [Fact]
    public void KeyCoversArchitectureOptionsSourceAndCompilerVersion()
    {
        var compiler = new FakeCompiler();
        var cache = new KernelCache(_dir, compiler);
        cache.Cubin("k.cu", "source A", "sm_90");
        cache.Cubin("k.cu", "source A", "sm_80");
        cache.Cubin("k.cu", "source A", "sm_90", ["--fmad=false"]);
        cache.Cubin("k.cu", "source B", "sm_90");
        compiler.Version = "fake 2.0";
        cache.Cubin("k.cu", "source A", "sm_90");
        Assert.Equal(5, cache.Compilations);
        Assert.Equal(5, Directory.GetFiles(_dir, "*.cubin").Length);
        cache.Cubin("k.cu", "source A", "sm_90");
        Assert.Equal(5, cache.Compilations);
    }

    [Fact]
    public void DamagedFileIsCompiledAgain_NoTemporaryFilesRemain()
    {
        var compiler = new FakeCompiler();
        var cache = new KernelCache(_dir, compiler);
        var good = cache.Cubin("k.cu", "src", "sm_90");
        var file = Assert.Single(Directory.GetFiles(_dir));
        File.WriteAllBytes(file, [1, 2, 3]);   // truncated or foreign
        Assert.Equal(good, cache.Cubin("k.cu", "src", "sm_90"));
        Assert.Equal(2, cache.Compilations);
        Assert.Equal(good, File.ReadAllBytes(file));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    [Fact]
    public void CompileErrorsAndNonCubinOutputThrowAndCacheNothing()
    {
        var compiler = new FakeCompiler();
        var cache = new KernelCache(_dir, compiler);
        var e = Assert.Throws<KernelCompileException>(() => cache.Cubin("bad.cu", "syntax error", "sm_90"));
        Assert.Contains("expected ';'", e.Message, StringComparison.Ordinal);
        compiler.Output = _ => [1, 2, 3, 4, 5];
        e = Assert.Throws<KernelCompileException>(() => cache.Cubin("odd.cu", "fine", "sm_80"));
        Assert.Contains("odd.cu (sm_80): fake 1.0 returned 5 bytes that are not a CUBIN (ELF) image", e.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(_dir) && Directory.EnumerateFileSystemEntries(_dir).Any());
    }

    [Fact]
    public void UnwritableFolderStillCompiles()
    {
        File.WriteAllText(_dir, "a file where the cache folder should be");
        try
        {
            var cache = new KernelCache(Path.Combine(_dir, "sub"), new FakeCompiler());
            Assert.Equal((byte)'E', cache.Cubin("k.cu", "src", "sm_90")[1]);
            Assert.Equal((byte)'E', cache.Cubin("k.cu", "src", "sm_90")[1]);
            Assert.Equal(2, cache.Compilations);
        }
        finally
        {
            File.Delete(_dir);
        }
    }

    [Fact]
    public void DefaultDirectoryIsFrugalCacheElseHomeCache()
    {
        var saved = Environment.GetEnvironmentVariable("FRUGAL_CACHE");
        try
        {
            Environment.SetEnvironmentVariable("FRUGAL_CACHE", "/tmp/frugal-x");
            Assert.Equal("/tmp/frugal-x", KernelCache.DefaultDirectory());
            Environment.SetEnvironmentVariable("FRUGAL_CACHE", null);
            Assert.Equal(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "frugal"), KernelCache.DefaultDirectory());
        }
        finally
        {
            Environment.SetEnvironmentVariable("FRUGAL_CACHE", saved);
        }
    }
}
