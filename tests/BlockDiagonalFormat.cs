using System.Globalization;
using System.Runtime.CompilerServices;
using Frugal.Formats;

namespace Frugal.Tests;

/// <summary>
/// A format added outside the engine, in one file (the example of docs/adding-a-format.md): a block-diagonal weight
/// [rows, cols] of B blocks [rows / B, cols / B] on the diagonal, everything off the diagonal zero and not stored. It
/// stores one trained tensor [B, rows / B, cols / B] (1/B of the dense values), multiplies with one batched GEMM per
/// product, and has a dense fallback through its own product. Text form <c>blockdiag:B</c>, registered when the test
/// assembly loads, so <c>frugal train --format blockdiag:4</c> works in-process.
/// </summary>
public sealed record BlockDiagonalFormat(int Blocks) : WeightFormat
{
    [ModuleInitializer]
    internal static void RegisterTextForm() => Register("blockdiag", Parse, "blockdiag:B");

    private static WeightFormat Parse(string text, string[] fields)
        => fields.Length == 2 && int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var b) && b > 0
            ? new BlockDiagonalFormat(b)
            : throw new FormatException($"weight format '{text}' is not blockdiag:B with B a positive number of blocks");

    /// <inheritdoc/>
    public override string Key => "blockdiag";

    /// <inheritdoc/>
    public override bool Fits(Shape shape) => shape.Rank == 2 && shape[0] % Blocks == 0 && shape[1] % Blocks == 0;

    /// <inheritdoc/>
    public override Weight Create(Shape shape, WeightInit init, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(init);
        if (!Fits(shape))
            throw new ArgumentException($"{this}: a {shape} weight is not a matrix of {Blocks}×{Blocks} whole blocks");
        return new BlockDiagonalWeight(this, shape, init, device, dtype);
    }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"blockdiag:{Blocks}");
}

/// <summary>The weight of <see cref="BlockDiagonalFormat"/>.</summary>
public sealed class BlockDiagonalWeight : Weight
{
    private readonly BlockDiagonalFormat _format;

    internal BlockDiagonalWeight(BlockDiagonalFormat format, Shape shape, WeightInit init, Device? device, DType dtype)
        : base(shape)
    {
        _format = format;
        Blocks = NewPart("", trained: true, () => init.Draw(new Shape(format.Blocks, Rows / format.Blocks, Cols / format.Blocks), device, dtype));
    }

    /// <summary>The diagonal blocks [B, rows / B, cols / B].</summary>
    public Tensor Blocks { get; }

    /// <inheritdoc/>
    public override WeightFormat Format => _format;

    /// <inheritdoc/>
    public override IEnumerable<WeightPart> Parts => [new("", Blocks, true)];

    /// <inheritdoc/>
    protected override Tensor LinearMatrix(Tensor x, Tensor? bias)
    {
        // y[:, block b] = x[:, block b] · W_bᵀ: x as [B, batch, cols / B], one batched GEMM.
        var (b, batch) = (_format.Blocks, x.Shape[0]);
        using var scope = TensorScope.Begin();
        var xb = x.Reshape(batch, b, Cols / b).Permute(1, 0, 2);
        var yb = F.MatMul(xb, Blocks, transB: true);
        var y = yb.Permute(1, 0, 2).Contiguous().Reshape(batch, Rows);
        return (bias is null ? y : y + bias).MoveToOuter();
    }

    /// <inheritdoc/>
    /// <remarks>Through the weight's own product, so the gradient is the product's.</remarks>
    public override Tensor ToDense() => DenseThrough(eye => LinearMatrix(eye, null));
}
