using System.Text;

namespace Frugal.Data;

/// <summary>
/// A byte-level text corpus for language models: the UTF-8 bytes of a text are the tokens (vocabulary 256, so any
/// text and any language encode losslessly), split into a training part and a validation part (the last fraction
/// of the bytes), from which batches of windows are drawn at seeded random offsets (counter-based: batch k of a seed
/// is the same whenever it is drawn, so a resumed run sees the same batches).
/// </summary>
public sealed class TextCorpus
{
    /// <summary>Tokens of the byte-level vocabulary.</summary>
    public const int Vocab = 256;

    /// <summary>Debian's <c>fortunes</c> package: about 2.5 MB of English text in 45 files.</summary>
    public const string DebianFortunes = "/usr/share/games/fortunes";

    private TextCorpus(string source, byte[] train, byte[] validation) => (Source, Train, Validation) = (source, train, validation);

    /// <summary>Where the text came from.</summary>
    public string Source { get; }

    /// <summary>Training tokens.</summary>
    public byte[] Train { get; }

    /// <summary>Validation tokens (the end of the text).</summary>
    public byte[] Validation { get; }

    /// <summary>The corpus of <paramref name="text"/>'s UTF-8 bytes, the last <paramref name="validationFraction"/>
    /// for validation.</summary>
    /// <exception cref="ArgumentException">Too little text for a training and a validation part of 2 bytes each.</exception>
    public static TextCorpus FromBytes(string source, byte[] text, double validationFraction = 0.1)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!(validationFraction > 0 && validationFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validationFraction), $"corpus {source}: the validation fraction must be in (0, 1), got {validationFraction}");
        var split = (int)Math.Round(text.Length * (1 - validationFraction));
        if (split < 2 || text.Length - split < 2)
            throw new ArgumentException($"corpus {source}: {text.Length} bytes are too few for a training and a validation part");
        return new TextCorpus(source, text[..split], text[split..]);
    }

    /// <summary>The corpus of a UTF-8 text file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">It is not UTF-8 text.</exception>
    public static TextCorpus FromFile(string path, double validationFraction = 0.1)
    {
        var bytes = File.ReadAllBytes(path);
        try
        {
            _ = new UTF8Encoding(false, throwOnInvalidBytes: true).GetCharCount(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"corpus {path}: not UTF-8 text ({e.Message})", e);
        }
        return FromBytes(path, bytes, validationFraction);
    }

    /// <summary>The fortune cookies of Debian's <c>fortunes</c> package in <paramref name="folder"/> (the plain
    /// files, by name; each "%" separator line becomes a blank line), or null when it is not installed.</summary>
    public static TextCorpus? FromFortunes(string folder = DebianFortunes, double validationFraction = 0.1)
    {
        if (!Directory.Exists(folder))
            return null;
        var files = Directory.GetFiles(folder).Where(f => Path.GetExtension(f) is not (".dat" or ".u8")).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0)
            return null;
        var text = new StringBuilder();
        foreach (var line in files.SelectMany(File.ReadLines))
            text.Append(line == "%" ? "" : line).Append('\n');
        return FromBytes($"{folder} (Debian's fortunes, {files.Count} files)", Encoding.UTF8.GetBytes(text.ToString()), validationFraction);
    }

    /// <summary>Batch <paramref name="index"/> of stream <paramref name="seed"/>: <paramref name="batch"/> windows of
    /// <paramref name="context"/> + 1 tokens at random offsets of <paramref name="part"/>, as inputs x and next-token
    /// targets y, I32 [batch, context] each.</summary>
    /// <exception cref="ArgumentException">The part is shorter than a window.</exception>
    public static (Tensor X, Tensor Y) Batch(byte[] part, int batch, int context, ulong seed, long index, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(part);
        if (batch <= 0 || context <= 0 || part.Length < context + 1)
            throw new ArgumentException($"corpus: windows of {context} + 1 tokens do not fit {part.Length} tokens (batch {batch})");
        var (x, y) = (new int[batch * context], new int[batch * context]);
        var starts = part.Length - context;
        for (var b = 0; b < batch; b++)
        {
            var u = Backends.Philox.Uniform(seed, (ulong)(index * batch + b));
            var start = Math.Min((int)(u * starts), starts - 1);
            for (var t = 0; t < context; t++)
            {
                x[b * context + t] = part[start + t];
                y[b * context + t] = part[start + t + 1];
            }
        }
        return (Tensor.FromArray(x, new Shape(batch, context), device), Tensor.FromArray(y, new Shape(batch, context), device));
    }

    /// <summary>Cross-entropy in nats per token of the unigram model of <see cref="Train"/> (byte frequencies, add-one
    /// smoothed) on <see cref="Validation"/>: the baseline a language model must beat.</summary>
    public double UnigramValidationLoss()
    {
        var counts = new double[Vocab];
        foreach (var b in Train)
            counts[b]++;
        var total = Train.Length + (double)Vocab;
        return -Validation.Average(b => Math.Log((counts[b] + 1) / total));
    }
}
