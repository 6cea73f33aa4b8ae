using System.Globalization;
using System.Text;
using Frugal.Backends.Cuda;
using Spectre.Console;

namespace Frugal.Models;

/// <summary><c>frugal kernels</c>: compiles every embedded CUDA kernel file with NVRTC (the engine's own compiler
/// path, a fresh cache) for each architecture asked for and prints each kernel's registers, stack, shared, local and
/// constant memory and spills as a table, optionally also as Markdown. Exit code 1 when NVRTC is missing or any file
/// fails to compile.</summary>
internal static class KernelsCommand
{
    /// <summary><c>frugal kernels</c>.</summary>
    public static readonly CliCommand Command = new("kernels",
        "Compiles every embedded CUDA kernel with NVRTC and lists each kernel's registers, stack, shared, local and constant memory and spills.",
        [
            new("arch", "sm_80,sm_90", "comma-separated targets   default: cuda:0's architecture"),
            new("cuobjdump", "PATH", "reads the CUBINs' resource usage   default: PATH, $CUDA_PATH/bin, /usr/local/cuda/bin, /opt/frugal/cuda-11.8/usr/bin; without one, ptxas's report alone (no constant memory)"),
            new("markdown", "FILE", "also write the table as Markdown to FILE"),
        ],
        Run);

    private static int Run(CliArgs args)
    {
        var archOption = args.Optional("arch");
        string[] archs;
        if (archOption is null)
        {
            var cuda = Device.CudaStatus;
            if (!cuda.Available)
                throw new UsageException($"no GPU to take the architecture from ({cuda.Reason}); give --arch, e.g. --arch sm_90");
            archs = [$"sm_{cuda.Devices[0].ComputeMajor}{cuda.Devices[0].ComputeMinor}"];
        }
        else
        {
            archs = archOption.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (archs.Length == 0)
                throw new UsageException("--arch is empty");
        }
        var markdown = args.Optional("markdown");
        KernelCheckReport report;
        try
        {
            report = KernelCheck.Run(archs, args.Optional("cuobjdump"));
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.ParamName is null ? e.Message : e.Message.Replace($" (Parameter '{e.ParamName}')", "", StringComparison.Ordinal));
        }
        catch (InvalidOperationException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }

        Console.WriteLine(report.Cuobjdump is { } tool
            ? $"{report.Compiler}; resources from {tool} -res-usage, shared memory and spills from ptxas -v"
            : $"{report.Compiler}; resources from ptxas -v only (no cuobjdump found: give --cuobjdump PATH for constant memory)");
        foreach (var f in report.Files)
        {
            Console.WriteLine(f.Error is null
                ? $"{f.Source}: {f.Architecture} CUBIN, {f.CubinBytes.ToString("N0", CultureInfo.InvariantCulture)} bytes, {f.Kernels.Count} kernel{(f.Kernels.Count == 1 ? "" : "s")}, {f.CompileSeconds.ToString("F1", CultureInfo.InvariantCulture)} s"
                : $"{f.Source}: {f.Architecture} FAILED");
        }
        var rows = Rows(report, archs);
        if (rows.Count > 0)
            AnsiConsole.Write(Table(rows, archs));
        if (markdown is not null)
        {
            try
            {
                File.WriteAllText(markdown, Markdown(report, rows, archs));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"--markdown: cannot write to '{markdown}': {e.Message}");
            }
        }
        Console.WriteLine(Summary(report, archs));
        var failed = report.Files.Where(f => f.Error is not null).ToList();
        foreach (var f in failed)
            Console.Error.WriteLine($"error: {f.Error}");
        if (failed.Count > 0)
        {
            Console.Error.WriteLine($"error: {failed.Count} of {report.Files.Count} kernel files failed the check: {string.Join(", ", failed.Select(f => $"{f.Source} ({f.Architecture})"))}");
            return 1;
        }
        return 0;
    }

    /// <summary>One row per (file, kernel), with that kernel's resources per architecture (null where absent).</summary>
    private sealed record Row(string Source, string Kernel, KernelResources?[] PerArch);

    private static List<Row> Rows(KernelCheckReport report, string[] archs)
    {
        var all = report.Files.SelectMany(f => f.Kernels).ToList();
        return [.. all.Select(k => (k.Source, k.Kernel)).Distinct().Order()
            .Select(key => new Row(key.Source, key.Kernel,
                [.. archs.Select(a => all.FirstOrDefault(k => k.Source == key.Source && k.Kernel == key.Kernel && k.Architecture == a))]))];
    }

    private static readonly (string Header, Func<KernelResources, int> Value)[] Columns =
    [
        ("registers", k => k.Registers),
        ("stack B", k => k.StackBytes),
        ("shared B", k => k.SharedBytes),
        ("local B", k => k.LocalBytes),
        ("constant B", k => k.ConstantBytes),
        ("spill stores B", k => k.SpillStoreBytes),
        ("spill loads B", k => k.SpillLoadBytes),
    ];

    private static string Cell(Row row, Func<KernelResources, int> value)
        => string.Join(" / ", row.PerArch.Select(k => k is null ? "–" : value(k).ToString(CultureInfo.InvariantCulture)));

    private static Table Table(List<Row> rows, string[] archs)
    {
        var table = new Table().Title($"kernel resources per thread (shared: per block), {string.Join(" / ", archs)}");
        table.AddColumn("file");
        table.AddColumn("kernel");
        foreach (var (header, _) in Columns)
            table.AddColumn(new TableColumn(header).RightAligned());
        foreach (var row in rows)
            table.AddRow([Markup.Escape(row.Source), Markup.Escape(row.Kernel), .. Columns.Select(c => Cell(row, c.Value))]);
        return table;
    }

    private static string Markdown(KernelCheckReport report, List<Row> rows, string[] archs)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"Per kernel, values for {string.Join(" / ", archs)}; {report.Compiler}, resources from ")
            .Append(report.Cuobjdump is null ? "ptxas -v" : "cuobjdump -res-usage, shared memory and spills from ptxas -v")
            .Append(". Bytes per thread except shared memory (static, per block, without the 1 KiB per block sm_90 reserves) ")
            .Append("and constant memory (summed over the banks; bank 0 holds the parameters).\n\n");
        text.Append("| file | kernel | ").AppendJoin(" | ", Columns.Select(c => c.Header)).Append(" |\n");
        text.Append("|---|---|").Append(string.Concat(Columns.Select(_ => "---:|"))).Append('\n');
        foreach (var row in rows)
            text.Append(CultureInfo.InvariantCulture, $"| {row.Source} | `{row.Kernel}` | ").AppendJoin(" | ", Columns.Select(c => Cell(row, c.Value))).Append(" |\n");
        text.Append('\n').Append(Summary(report, archs)).Append('\n');
        return text.ToString();
    }

    private static string Summary(KernelCheckReport report, string[] archs)
    {
        var kernels = report.Files.SelectMany(f => f.Kernels).ToList();
        var parts = new List<string>();
        foreach (var arch in archs)
        {
            var mine = kernels.Where(k => k.Architecture == arch).ToList();
            if (mine.Count == 0)
            {
                parts.Add($"{arch}: no kernel");
                continue;
            }
            var most = mine.MaxBy(k => k.Registers)!;
            var shared = mine.MaxBy(k => k.SharedBytes)!;
            var spilling = mine.Where(k => k.SpillStoreBytes > 0 || k.SpillLoadBytes > 0 || k.LocalBytes > 0).ToList();
            parts.Add($"{arch}: {mine.Count} kernels, at most {most.Registers} registers ({most.Kernel}), "
                + (shared.SharedBytes > 0 ? $"at most {shared.SharedBytes.ToString("N0", CultureInfo.InvariantCulture)} B shared ({shared.Kernel}), " : "no shared memory, ")
                + (spilling.Count == 0 ? "no spills or local memory" : $"spills or local memory in {string.Join(", ", spilling.Select(k => $"{k.Kernel} ({k.SpillStoreBytes}/{k.SpillLoadBytes} B, local {k.LocalBytes} B)"))}"));
        }
        var files = report.Files.Select(f => f.Source).Distinct().Count();
        return $"{files} kernel files; {string.Join("; ", parts)}";
    }
}
