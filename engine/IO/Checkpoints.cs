using System.Globalization;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.IO;

/// <summary>
/// Training checkpoints in safetensors (<see cref="SafeTensors"/>): every parameter and buffer of the model under its
/// dotted name (a sparse layer's values, row pointers and column indices; a low-rank layer's factors; a quantized
/// layer's codes and scales: each format's own parts, so they round-trip exactly), the optimizer's state as
/// "optimizer/PARAMETER/STATE", and in the metadata each format's extra state (a master-free weight's rounding
/// stream), the optimizer's type, step and rate, the random stream, and the caller's entries. Writing is atomic;
/// loading checks everything before it changes anything, so a bad file leaves the model and optimizer as they were.
/// </summary>
public static class Checkpoints
{
    /// <summary>Writes the checkpoint of <paramref name="model"/> (and <paramref name="optimizer"/>) with
    /// <paramref name="metadata"/> to <paramref name="path"/>.</summary>
    /// <exception cref="ArgumentException">A metadata key collides with the checkpoint's own.</exception>
    public static void Save(string path, Module model, Optimizer? optimizer = null, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var tensors = model.NamedTensors().ToList();
        if (optimizer is not null)
            tensors.AddRange(optimizer.NamedStates());
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kv in model.ExtraState().Concat(optimizer?.Metadata() ?? []))
            meta.Add(kv.Key, kv.Value);
        var (seed, offset) = Rng.State;
        meta["rng.state"] = string.Create(CultureInfo.InvariantCulture, $"{seed},{offset}");
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
        {
            if (!meta.TryAdd(k, v))
                throw new ArgumentException($"checkpoint {path}: metadata key '{k}' is the checkpoint's own");
        }
        SafeTensors.Write(path, tensors, meta);
    }

    /// <summary>Loads the checkpoint at <paramref name="path"/> into <paramref name="model"/> (built with the same
    /// layers and formats; sparse patterns and ranks may differ from the fresh model's) and
    /// <paramref name="optimizer"/>, restores the random stream, and returns the metadata.</summary>
    /// <exception cref="SafeTensorsException">The file is damaged or not a Frugal checkpoint.</exception>
    /// <exception cref="ArgumentException">It does not fit the model or the optimizer, naming what differs; nothing
    /// was changed.</exception>
    public static IReadOnlyDictionary<string, string> Load(string path, Module model, Optimizer? optimizer = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var file = SafeTensors.Read(path, requireHash: true);
        try
        {
            var known = model.NamedTensors().Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
            if (file.Entries.FirstOrDefault(e => !e.Name.StartsWith(Optimizer.StatePrefix, StringComparison.Ordinal) && !known.Contains(e.Name)) is { } extra)
                throw new ArgumentException($"'{extra.Name}' is not a tensor of this model");
            foreach (var m in model.Modules())
                m.CheckOwn(file);
            optimizer?.CheckState(file);
            if (ParseRng(file) is null)
                throw new ArgumentException("the metadata 'rng.state' is missing or not \"seed,offset\"");
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"checkpoint {path}: {e.Message}", e);
        }
        foreach (var m in model.Modules())
            m.LoadOwn(file, optimizer);
        optimizer?.LoadState(file);
        Rng.State = ParseRng(file)!.Value;
        return file.Metadata;
    }

    private static (ulong, ulong)? ParseRng(SafeTensorsFile file)
        => file.Metadata.GetValueOrDefault("rng.state")?.Split(',') is [var s, var o]
            && ulong.TryParse(s, CultureInfo.InvariantCulture, out var seed) && ulong.TryParse(o, CultureInfo.InvariantCulture, out var offset)
            ? (seed, offset)
            : null;
}
