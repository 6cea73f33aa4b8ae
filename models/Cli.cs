using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Frugal.Models;

/// <summary>A command-line mistake: the CLI prints the message and the usage, never a stack trace.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>The device asked for on the command line cannot be used: the CLI prints why (exit code 1).</summary>
public sealed class DeviceUnavailableException(string message) : Exception(message);

/// <summary>One option of a command: its name without the dashes, the placeholder of its value (null for a flag,
/// which takes none) and its help, which ends with the default.</summary>
public sealed record CliOption(string Name, string? Value, string Help)
{
    /// <summary><c>--device</c>, the same in every command that trains.</summary>
    public static readonly CliOption Device = new("device", "DEVICE", "cpu, or cuda / cuda:N for a GPU   default cpu");

    /// <summary><c>--data</c>: the image models' data set, in every command that trains them.</summary>
    public static readonly CliOption Data = new("data", "DIR", "mlp, cnn: a folder with the four Fashion-MNIST IDX files, or 'embedded' for the slice shipped with Frugal   default: /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) when installed, else the embedded slice");

    /// <summary><c>--corpus</c>: the GPT's text, in every command that trains it.</summary>
    public static readonly CliOption Corpus = new("corpus", "FILE", "gpt: a UTF-8 text file   default: Debian's fortunes (/usr/share/games/fortunes, apt-get install fortunes) when installed, else the README embedded in the CLI");

    /// <summary><c>--optimizer-bits</c>, in every command that takes it.</summary>
    public static readonly CliOption OptimizerBits = new("optimizer-bits", "BITS", "32, or 8: Adam/AdamW moments of tensors ≥ 4096 values in blockwise 8 bits   default 32");
}

/// <summary>A command of the CLI: its name, its help's description, its options and what runs it (returning the
/// exit code).</summary>
public sealed record CliCommand(string Name, string Description, IReadOnlyList<CliOption> Options, Func<CliArgs, int> Run);

/// <summary>The options of one command as System.CommandLine parsed them, each value checked when it is read.
/// Parse errors (an unknown option, a missing value, an option given twice, a stray argument) become a
/// <see cref="UsageException"/> here, before the command runs.</summary>
public sealed class CliArgs
{
    private readonly ParseResult _result;
    private readonly Dictionary<string, Option> _options;

    internal CliArgs(ParseResult result, IReadOnlyDictionary<string, Option> options)
    {
        _result = result;
        _options = new(options, StringComparer.Ordinal);
        var names = _options.Keys.ToArray();
        foreach (var (name, option) in _options)
        {
            if (result.Tokens.Count(t => t.Type == TokenType.Option && t.Value == option.Name) > 1)
                throw new UsageException($"option --{name} given twice");
        }
        if (result.UnmatchedTokens is [var stray, ..])
        {
            if (!stray.StartsWith('-'))
                throw new UsageException($"unexpected argument '{stray}'");
            var name = stray.TrimStart('-').Split('=', ':')[0];
            throw new UsageException($"unknown option --{name}" + (Closest(name, names) is { } near ? $"; did you mean --{near}?" : ""));
        }
        foreach (var error in result.Errors)
        {
            if (error.SymbolResult is OptionResult { Tokens.Count: 0 } missing)
                throw new UsageException($"option {missing.Option.Name} needs a value");
            throw new UsageException(error.Message);
        }
    }

    /// <summary>True when one of <paramref name="names"/> was given.</summary>
    public bool Any(IEnumerable<string> names) => names.Any(Given);

    /// <summary>Refuses every option of <paramref name="names"/> that was given: "--NAME <paramref name="why"/>".</summary>
    public void Refuse(IEnumerable<string> names, string why)
    {
        if (names.FirstOrDefault(Given) is { } given)
            throw new UsageException($"--{given} {why}");
    }

    private bool Given(string name) => _result.GetResult(Lookup(name)) is { Implicit: false };

    private Option Lookup(string name) => _options.TryGetValue(name, out var option)
        ? option
        : throw new InvalidOperationException($"the command has no option --{name}");

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
    public bool Flag(string name) => Given(name);

    /// <summary>A string option, or its default.</summary>
    public string String(string name, string fallback) => Optional(name) ?? fallback;

    /// <summary>An optional string option.</summary>
    public string? Optional(string name) => Given(name) ? _result.GetValue((Option<string>)Lookup(name)) : null;

    /// <summary>A positive integer option.</summary>
    public int Int(string name, int fallback, int min = 1)
    {
        if (Optional(name) is not { } s)
            return fallback;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < min)
            throw new UsageException($"--{name} must be an integer >= {min}, got '{s}'");
        return v;
    }

    /// <summary>A positive number option.</summary>
    public double Double(string name, double fallback)
    {
        if (Optional(name) is not { } s)
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

/// <summary>The <c>frugal</c> command tree in System.CommandLine: one <see cref="Command"/> per
/// <see cref="CliCommand"/>, a string option per valued <see cref="CliOption"/>, a flag (no value) per flag, and
/// help on every command.</summary>
internal sealed class CliParser
{
    private readonly Command _root;
    private readonly Dictionary<string, (CliCommand Command, Dictionary<string, Option> Options)> _commands = new(StringComparer.Ordinal);

    public CliParser(string description, IReadOnlyList<CliCommand> commands)
    {
        _root = new Command("frugal", description) { new HelpOption() };
        foreach (var command in commands)
        {
            var options = new Dictionary<string, Option>(StringComparer.Ordinal);
            var sub = new Command(command.Name, command.Description);
            foreach (var o in command.Options)
            {
                Option option = o.Value is null
                    ? new Option<bool>("--" + o.Name) { Description = o.Help, Arity = ArgumentArity.Zero }
                    : new Option<string>("--" + o.Name) { Description = o.Help, HelpName = o.Value };
                options.Add(o.Name, option);
                sub.Options.Add(option);
            }
            _root.Subcommands.Add(sub);
            _commands.Add(command.Name, (command, options));
        }
    }

    /// <summary>The command named <paramref name="name"/>, or a usage error (with the nearest name).</summary>
    public CliCommand Find(string name) => _commands.TryGetValue(name, out var c)
        ? c.Command
        : throw new UsageException($"unknown command '{name}'" + (CliArgs.Closest(name, _commands.Keys) is { } near ? $"; did you mean '{near}'?" : ""));

    /// <summary>The options of <c>frugal COMMAND ...</c> (<paramref name="args"/>, the command word first).</summary>
    public CliArgs Parse(IReadOnlyList<string> args) => new(_root.Parse([.. args]), _commands[args[0]].Options);

    /// <summary>The help of <paramref name="command"/> (null: of the whole CLI), as System.CommandLine writes it.</summary>
    public string Help(string? command)
    {
        using var writer = new StringWriter();
        _root.Parse(command is null ? ["-h"] : [command, "-h"]).Invoke(new InvocationConfiguration { Output = writer });
        return writer.ToString();
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
