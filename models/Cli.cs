using System.Globalization;

namespace Frugal.Models;

/// <summary>A command-line mistake: the CLI prints the message and the usage, never a stack trace.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>The device asked for on the command line cannot be used: the CLI prints why (exit code 1).</summary>
public sealed class DeviceUnavailableException(string message) : Exception(message);

/// <summary>Parsed <c>--name value</c> options of one command, each option checked against the command's list.</summary>
public sealed class CliArgs
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _flags = new(StringComparer.Ordinal);

    /// <summary>Parses <paramref name="args"/> (after the command word) allowing only <paramref name="known"/> options
    /// (each with a value) and <paramref name="flags"/> (options without one).</summary>
    public CliArgs(IReadOnlyList<string> args, IReadOnlyCollection<string> known, IReadOnlyCollection<string>? flags = null)
    {
        for (var i = 0; i < args.Count; i++)
        {
            var a = args[i];
            if (!a.StartsWith("--", StringComparison.Ordinal))
                throw new UsageException($"unexpected argument '{a}'");
            var name = a[2..];
            if (flags is not null && flags.Contains(name))
            {
                if (!_flags.Add(name))
                    throw new UsageException($"option --{name} given twice");
                continue;
            }
            string? inline = null;
            var eq = name.IndexOf('=', StringComparison.Ordinal);
            if (eq >= 0)
            {
                inline = name[(eq + 1)..];
                name = name[..eq];
            }
            if (!known.Contains(name))
                throw new UsageException($"unknown option --{name}" + (Closest(name, [.. known, .. flags ?? []]) is { } near ? $"; did you mean --{near}?" : ""));
            if (inline is null && i + 1 >= args.Count)
                throw new UsageException($"option --{name} needs a value");
            var value = inline ?? args[++i];
            if (!_values.TryAdd(name, value))
                throw new UsageException($"option --{name} given twice");
        }
    }

    /// <summary>The option nearest to a mistyped <paramref name="name"/>: the one fewest edits away (insertions,
    /// deletions, substitutions, swaps of neighbours), if that is at most a third of its length; or the one it
    /// begins.</summary>
    internal static string? Closest(string name, IEnumerable<string> options)
    {
        var (best, distance) = options.Select(o => (o, Distance(name, o))).OrderBy(p => p.Item2).ThenBy(p => p.o, StringComparer.Ordinal).FirstOrDefault();
        if (best is not null && distance <= Math.Max(1, best.Length / 3))
            return best;
        return options.Where(o => name.Length >= 3 && o.StartsWith(name, StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault();
    }

    /// <summary>Optimal string alignment distance between <paramref name="a"/> and <paramref name="b"/>.</summary>
    private static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (var i = 0; i <= a.Length; i++)
            d[i, 0] = i;
        for (var j = 0; j <= b.Length; j++)
            d[0, j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                    d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        }
        return d[a.Length, b.Length];
    }

    /// <summary>True when the flag <paramref name="name"/> was given.</summary>
    public bool Flag(string name) => _flags.Contains(name);

    /// <summary>A string option, or its default.</summary>
    public string String(string name, string fallback) => _values.GetValueOrDefault(name, fallback);

    /// <summary>An optional string option.</summary>
    public string? Optional(string name) => _values.GetValueOrDefault(name);

    /// <summary>A positive integer option.</summary>
    public int Int(string name, int fallback, int min = 1)
    {
        if (!_values.TryGetValue(name, out var s))
            return fallback;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < min)
            throw new UsageException($"--{name} must be an integer >= {min}, got '{s}'");
        return v;
    }

    /// <summary>A positive number option.</summary>
    public double Double(string name, double fallback)
    {
        if (!_values.TryGetValue(name, out var s))
            return fallback;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !(v > 0) || double.IsInfinity(v))
            throw new UsageException($"--{name} must be a positive number, got '{s}'");
        return v;
    }

    /// <summary>A comma-separated list of distinct integers ≥ 1 (e.g. model widths), in ascending order.</summary>
    public int[] Widths(string name, string fallback)
    {
        var text = String(name, fallback);
        var widths = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var w) || w < 1)
                throw new UsageException($"--{name} must be comma-separated integers >= 1, got '{text}'");
            if (widths.Contains(w))
                throw new UsageException($"--{name} lists {w} twice");
            widths.Add(w);
        }
        return [.. widths.Order()];
    }

    /// <summary>One of <paramref name="choices"/>.</summary>
    public string Choice(string name, string fallback, IReadOnlyCollection<string> choices)
    {
        var v = String(name, fallback);
        if (!choices.Contains(v))
            throw new UsageException($"--{name} must be one of {string.Join("|", choices)}, got '{v}'");
        return v;
    }
}

/// <summary>Checks on the files a command will write, made before it trains.</summary>
internal static class CliFiles
{
    /// <summary>Checks before training that the file <paramref name="path"/> (option <paramref name="option"/>) can
    /// be written: its folder exists and takes a file, so a run is not lost to a bad path at its end.</summary>
    public static void CheckFile(string path, string option)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (!Directory.Exists(folder))
            throw new UsageException($"--{option} {path}: the folder '{folder}' does not exist");
        CheckWritable(folder, create: false, option: option);
    }

    /// <summary>Creates <paramref name="dir"/> (unless <paramref name="create"/> is false) and checks that a file
    /// can be written there; else a usage error naming option <paramref name="option"/>.</summary>
    public static void CheckWritable(string dir, bool create = true, string option = "out")
    {
        try
        {
            if (create)
                Directory.CreateDirectory(dir);
            var probe = Path.Combine(dir, $".frugal-write-test-{Environment.ProcessId}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--{option}: cannot write to '{dir}': {e.Message}");
        }
    }
}
