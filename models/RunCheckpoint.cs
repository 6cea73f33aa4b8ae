using System.Globalization;
using Frugal.IO;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Models;

/// <summary>The CLI's side of checkpoints: a run is saved with its options and step, and resumed only with the same
/// options; every problem becomes a usage error naming the file.</summary>
internal static class RunCheckpoint
{
    private const string OptionsKey = "train.options";
    private const string StepKey = "train.step";

    /// <summary>The validated checkpoint at <paramref name="path"/> (option <paramref name="option"/>).</summary>
    public static SafeTensorsFile Read(string path, string option)
    {
        try
        {
            return SafeTensors.Read(path, requireHash: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--{option}: {e.Message}");
        }
    }

    /// <summary>The step the run saved at <paramref name="path"/> stopped after, once its options are
    /// <paramref name="options"/>.</summary>
    public static long Step(string path, string options)
    {
        using var stored = Read(path, "resume");
        if (stored.Metadata.GetValueOrDefault(OptionsKey) != options)
            throw new UsageException($"--resume {path}: the run was saved with options [{stored.Metadata.GetValueOrDefault(OptionsKey) ?? "(none)"}]; this one has [{options}]: give the same options to continue it");
        return Long(stored.Metadata, StepKey, path);
    }

    /// <summary>A whole-number metadata entry of the checkpoint at <paramref name="path"/>.</summary>
    public static long Long(IReadOnlyDictionary<string, string> metadata, string key, string path)
        => long.TryParse(metadata.GetValueOrDefault(key), NumberStyles.None, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new UsageException($"--resume {path}: no valid {key} in the checkpoint");

    /// <summary>Loads the checkpoint into <paramref name="model"/> and <paramref name="optimizer"/>; returns its metadata.</summary>
    public static IReadOnlyDictionary<string, string> Load(string path, Module model, Optimizer? optimizer, string option)
    {
        try
        {
            return Checkpoints.Load(path, model, optimizer);
        }
        catch (Exception e) when (e is ArgumentException or IOException)
        {
            throw new UsageException($"--{option}: {e.Message}");
        }
    }

    /// <summary>Saves the run after <paramref name="step"/> steps with its <paramref name="options"/> and
    /// <paramref name="extra"/> metadata.</summary>
    public static void Save(string path, Module model, Optimizer optimizer, string options, long step, IReadOnlyDictionary<string, string>? extra = null)
    {
        var meta = new Dictionary<string, string>(extra ?? new Dictionary<string, string>())
        {
            [OptionsKey] = options,
            [StepKey] = step.ToString(CultureInfo.InvariantCulture),
        };
        try
        {
            Checkpoints.Save(path, model, optimizer, meta);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--save: cannot write '{path}': {e.Message}");
        }
    }
}
