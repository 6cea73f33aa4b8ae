using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using Frugal.Backends;
using Frugal.Backends.Cuda;

namespace Frugal.Tests;

/// <summary>The contract between the CUDA C sources and C#: embedded sources, layout sizes and op codes agree on
/// both sides (checked without a GPU; KernelCheck compiles the C side in CI).</summary>
public partial class KernelAbiTests
{
    private static readonly string Header = KernelSources.Read("common.cuh");

    [Fact]
    public void EveryKernelSourceIsEmbedded()
    {
        var folder = Path.Combine(RepoRoot(), "kernels");
        if (!Directory.Exists(folder))
            Assert.Skip($"no source tree at {folder}: this run is from a published build (the GPU bundle), not a checkout");
        var onDisk = Directory.GetFiles(Path.Combine(RepoRoot(), "kernels"), "*.cu*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(Path.Combine(RepoRoot(), "kernels"), f).Replace('\\', '/')).Order(StringComparer.Ordinal);
        Assert.Equal(onDisk, KernelSources.Names);
        Assert.Contains("common.cuh", KernelSources.Names);
        Assert.Contains("elementwise.cu", KernelSources.Names);
        var e = Assert.Throws<FileNotFoundException>(() => KernelSources.Read("missing.cu"));
        Assert.Contains("'missing.cu'", e.Message, StringComparison.Ordinal);
        Assert.Contains("elementwise.cu", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void StridedLayoutHasTheSizeTheHeaderAsserts()
    {
        var asserted = int.Parse(SizeAssert().Match(Header).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.Equal(asserted, Unsafe.SizeOf<KernelAbi.Strided>());
        Assert.Equal(136, asserted);
        var window = int.Parse(WindowSizeAssert().Match(Header).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.Equal(window, Unsafe.SizeOf<KernelAbi.Window>());
        var maxDims = int.Parse(MaxDims().Match(Header).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.Equal(KernelAbi.MaxDims, maxDims);
    }

    [Fact]
    public void OpCodesMatchTheEnums()
    {
        AssertCodes<UnaryOp>("UNARY");
        AssertCodes<BinaryOp>("BINARY");
        AssertCodes<ReduceOp>("REDUCE");
        AssertCodes<DType>("DTYPE");
        AssertCodes<QuantScheme>("SCHEME");
    }

    [Fact]
    public void QuantizedLayoutsHaveTheSizesTheHeaderAsserts()
    {
        Assert.Equal(Asserted("QuantShape"), Unsafe.SizeOf<KernelAbi.QuantShape>());
        Assert.Equal(16, Asserted("QuantShape"));
        Assert.Equal(Asserted("QuantScale"), Unsafe.SizeOf<QuantScale>());
        Assert.Equal(8, Asserted("QuantScale"));
        Assert.Equal(Asserted("Adam8BitFactors"), Unsafe.SizeOf<KernelAbi.Adam8BitFactors>());
        Assert.Equal(56, Asserted("Adam8BitFactors"));

        static int Asserted(string type)
            => int.Parse(Regex.Match(Header, $@"static_assert\(sizeof\({type}\) == (\d+)").Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private static void AssertCodes<TEnum>(string prefix) where TEnum : struct, Enum
    {
        var codes = Regex.Matches(Header, $@"\b{prefix}_([A-Z0-9_]+) = (\d+)")
            .ToDictionary(m => m.Groups[1].Value.Replace("_", "", StringComparison.Ordinal), m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture),
                StringComparer.OrdinalIgnoreCase);
        foreach (var value in Enum.GetValues<TEnum>())
        {
            Assert.True(codes.TryGetValue(value.ToString(), out var code), $"common.cuh has no {prefix} code for {typeof(TEnum).Name}.{value}");
            Assert.Equal(Convert.ToInt32(value, CultureInfo.InvariantCulture), code);
        }
        Assert.Equal(Enum.GetValues<TEnum>().Length, codes.Count);
    }

    [Fact]
    public void StridedFromAViewAddressesTheSameElements()
    {
        using var t = Tensor.Uniform(new Shape(2, 3, 4), -1, 1, 1);
        using var view = t.Permute(2, 0, 1).Narrow(0, 1, 2);   // [2, 2, 3], strides [1, 12, 4], offset 1
        var s = KernelAbi.Strided.From(view.View, "x");
        Assert.Equal(3, s.Rank);
        var all = t.ToArray<float>();
        var expected = view.ToArray<float>();
        for (var i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], all[view.Offset + OffsetOf(s, i)]);

        using var deep = Tensor.Zeros(new Shape(1, 1, 1, 1, 1, 1, 1, 1, 2));
        var e = Assert.Throws<NotSupportedException>(() => KernelAbi.Strided.From(deep.View, "input a"));
        Assert.Contains("input a has shape [1, 1, 1, 1, 1, 1, 1, 1, 2]", e.Message, StringComparison.Ordinal);
    }

    /// <summary>C# twin of <c>offset_of</c> in common.cuh.</summary>
    private static long OffsetOf(KernelAbi.Strided v, long i)
    {
        long off = 0;
        for (var d = v.Rank - 1; d >= 0; --d)
        {
            var n = v.Shape[d];
            off += i % n * v.Stride[d];
            i /= n;
        }
        return off;
    }

    private static string RepoRoot([CallerFilePath] string path = "") => Path.GetDirectoryName(Path.GetDirectoryName(path))!;

    [GeneratedRegex(@"static_assert\(sizeof\(Strided\) == (\d+)")]
    private static partial Regex SizeAssert();

    [GeneratedRegex(@"static_assert\(sizeof\(Window\) == (\d+)")]
    private static partial Regex WindowSizeAssert();

    [GeneratedRegex(@"#define FRUGAL_MAX_DIMS (\d+)")]
    private static partial Regex MaxDims();
}
