using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace Frugal.Tests;

/// <summary>The hand-written LibraryImport bindings (engine/Backends/Cuda/Native) against the real CUDA 11.8 headers,
/// without a GPU: the bindings are read from the .cs source as written, turned into bindings.inc, and
/// emulator/bindings/check.cpp static_asserts each one against the header's declaration (parameter count, sizes,
/// type classes, pointees, constant values). See docs/cuda-bindings.md.</summary>
public partial class BindingHeaderTests
{
    private static readonly string[] Files = ["Driver", "Nvrtc", "Cublas", "Cusparse"];

    /// <summary>The marshalled C# types and the check.cpp type each stands for (x86-64 Linux); out/ref T is T*.</summary>
    private static readonly Dictionary<string, string> CsTypes = new(StringComparer.Ordinal)
    {
        ["int"] = "cs::i32", ["uint"] = "cs::u32", ["long"] = "cs::i64", ["nint"] = "cs::nint", ["nuint"] = "cs::nuint",
        ["void*"] = "void*", ["void**"] = "void**", ["byte*"] = "cs::byte*", ["byte**"] = "cs::byte**",
    };

    [Fact]
    public void BindingsMatchTheCudaHeaders()
    {
        var (root, include) = Prerequisites();
        var (text, counts) = Generate(root);
        foreach (var (file, (imports, binds, consts)) in counts)
        {
            // A [LibraryImport] the regex does not recognise would otherwise go unchecked without anyone noticing.
            Assert.True(imports == binds, $"{file}.cs has {imports} [LibraryImport] but the parser read {binds} bindings: extend the Binding() regex");
            Assert.True(imports > 0, $"{file}.cs: no [LibraryImport] found");
            Assert.True(consts > 0, $"{file}.cs: no `public const int/uint` found");
        }
        var (exit, output) = Compile(root, include, text);
        Assert.True(exit == 0, $"check.cpp failed against {include} (exit {exit}):\n{output}\nbindings.inc:\n{text}");
    }

    [Fact]
    public void AWrongBindingFailsTheCheck()
    {
        var (root, include) = Prerequisites();
        var (text, _) = Generate(root);
        const string Right = "BIND(Driver, cuMemAlloc_v2, cs::i32(cs::nint*, cs::nuint))";
        const string Wrong = "BIND(Driver, cuMemAlloc_v2, cs::i32(cs::nint*, cs::u32))"; // size_t bytesize as uint
        Assert.Contains(Right, text, StringComparison.Ordinal);
        var (exit, output) = Compile(root, include, text.Replace(Right, Wrong, StringComparison.Ordinal));
        Assert.True(exit != 0, $"check.cpp accepted a 32-bit size for cuMemAlloc_v2:\n{output}");
        // g++ names the entry point in the static_assert message and reports the failing parameter's number (2).
        Assert.Contains("static assertion failed: cuMemAlloc_v2", output, StringComparison.Ordinal);
        Assert.Contains("(2 == 0)", output, StringComparison.Ordinal);
        Assert.Single(output.Split('\n'), l => l.Contains(" error: ", StringComparison.Ordinal));
    }

    /// <summary>The repository root and the CUDA include folder; skips when the check cannot run here.</summary>
    private static (string Root, string Include) Prerequisites()
    {
        var root = TestUtil.CheckoutRoot();
        var include = Environment.GetEnvironmentVariable("FRUGAL_CUDA_INCLUDE") is { Length: > 0 } set ? set : "/opt/frugal/cuda-11.8/usr/include";
        if (!File.Exists(Path.Combine(include, "cuda.h")))
            Assert.Skip($"no cuda.h in {include} (set FRUGAL_CUDA_INCLUDE, or extract the CUDA 11.8 headers there with " +
                "emulator/install-cuda-parts.sh as root, as .ci/run does)");
        if (!OnPath("g++"))
            Assert.Skip("g++ is not on PATH (Debian package g++)");
        return (root, include);
    }

    /// <summary>bindings.inc for the four .cs files, and per file: [LibraryImport] occurrences, BIND lines, CONST lines.</summary>
    private static (string Text, Dictionary<string, (int Imports, int Binds, int Consts)> Counts) Generate(string root)
    {
        var text = new StringBuilder();
        var counts = new Dictionary<string, (int, int, int)>(StringComparer.Ordinal);
        foreach (var file in Files)
        {
            var src = File.ReadAllText(Path.Combine(root, "engine", "Backends", "Cuda", "Native", file + ".cs"));
            var binds = 0;
            foreach (Match m in Binding().Matches(src))
            {
                var parameters = m.Groups[3].Value.Split(',').Select(p => p.Trim()).Where(p => p.Length > 0)
                    .Select(p => CsType(ParameterName().Replace(p, "")));
                text.Append(System.Globalization.CultureInfo.InvariantCulture,
                    $"BIND({file}, {m.Groups[1].Value}, {CsType(m.Groups[2].Value)}({string.Join(", ", parameters)}))\n");
                binds++;
            }
            var consts = 0;
            foreach (Match m in Constant().Matches(src))
                foreach (var item in m.Groups[1].Value.Split(','))
                {
                    var parts = item.Split('=');
                    Assert.True(parts.Length == 2, $"{file}.cs: cannot read the constant `{item.Trim()}`");
                    text.Append(System.Globalization.CultureInfo.InvariantCulture, $"CONST({file}_{parts[0].Trim()}, {parts[1].Trim()})\n");
                    consts++;
                }
            counts[file] = (CountOf(src, "[LibraryImport"), binds, consts);
        }
        return (text.ToString(), counts);

        static int CountOf(string s, string what) => (s.Length - s.Replace(what, "", StringComparison.Ordinal).Length) / what.Length;
    }

    private static string CsType(string type)
    {
        type = type.Trim();
        var byRef = ByRef().Match(type);
        var name = byRef.Success ? byRef.Groups[2].Value : type;
        Assert.True(CsTypes.TryGetValue(name, out var mapped), $"C# type `{name}` has no check.cpp equivalent: add it to CsTypes (and cs:: in check.cpp)");
        return byRef.Success ? mapped + "*" : mapped;
    }

    /// <summary>Writes bindings.inc to a fresh temp folder and compiles check.cpp against it: (exit code, g++ output).</summary>
    private static (int Exit, string Output) Compile(string root, string include, string bindings)
    {
        var folder = Path.Combine(Path.GetTempPath(), $"frugal-binding-check-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            File.WriteAllText(Path.Combine(folder, "bindings.inc"), bindings);
            var start = new ProcessStartInfo("g++") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "-std=c++20", "-fsyntax-only", "-isystem", include, "-I" + folder, Path.Combine(root, "emulator", "bindings", "check.cpp") })
                start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output + error.Result);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static bool OnPath(string tool)
        => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Any(dir => File.Exists(Path.Combine(dir, tool)));

    // The same patterns as the original gen.py: an EntryPoint, then the method's return type and parameter list.
    [GeneratedRegex(@"EntryPoint\s*=\s*""(\w+)""\)\]\s*public static partial ([\w*]+) \w+\(([^)]*)\);", RegexOptions.CultureInvariant)]
    private static partial Regex Binding();

    [GeneratedRegex(@"public const (?:int|uint) ([^;]+);", RegexOptions.CultureInvariant)]
    private static partial Regex Constant();

    [GeneratedRegex(@"\s+\w+$", RegexOptions.CultureInvariant)]
    private static partial Regex ParameterName();

    [GeneratedRegex(@"^(out|ref)\s+(.+)", RegexOptions.CultureInvariant)]
    private static partial Regex ByRef();
}
