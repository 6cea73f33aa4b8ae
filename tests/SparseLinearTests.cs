using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>A CSR linear layer holds exactly nnz values of parameter, gradient and optimizer state plus its FormatMeta
/// indices (its equality with the dense layer is in <see cref="SparseLayerTests"/>).</summary>
public class SparseLinearTests
{
    [Fact]
    public void HoldsExactlyNnzValuesOfEachCategoryPlusTheIndices()
    {
        var device = Device.CreateCpu("sparse-bytes");
        Init.ManualSeed(2);
        using var layer = new Linear(784, 512, WeightFormat.Csr(0.1), device: device);
        var weight = Assert.IsType<SparseWeight>(layer.Weight);
        var nnz = weight.Pattern.Nnz;
        Assert.Equal(512 * 78, nnz);   // round(0.1 · 784) per row
        var alloc = device.Allocator;
        const long bias = 512;
        Assert.Equal(4L * (nnz + bias), alloc.Current(MemoryCategory.Parameter));
        Assert.Equal(4L * (512 + 1 + nnz), alloc.Current(MemoryCategory.FormatMeta));
        // The weight's bytes exclude the (dense) bias.
        var declared = weight.StorageBytes();
        Assert.Equal(alloc.Current(MemoryCategory.Parameter), declared[MemoryCategory.Parameter] + 4L * bias);
        Assert.Equal(alloc.Current(MemoryCategory.FormatMeta), declared[MemoryCategory.FormatMeta]);
        using var opt = new Adam(layer.Parameters(), 1e-3);
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Uniform(new Shape(16, 784), -1, 1, 3, device: device);
            F.Sum(layer.Forward(x)).Backward();
        }
        Assert.Equal(4L * (nnz + bias), alloc.Current(MemoryCategory.Gradient));
        opt.Step();
        Assert.Equal(2 * 4L * (nnz + bias), alloc.Current(MemoryCategory.OptimizerState));
        Assert.Equal(0, alloc.Current(MemoryCategory.Activation));
        // Against the dense layer: Parameter + Gradient + OptimizerState + FormatMeta.
        var sparseTotal = 4 * 4L * (nnz + bias) + 4L * (513 + nnz);
        var denseTotal = 4 * 4L * (784 * 512 + bias);
        Assert.True(sparseTotal <= 0.15 * denseTotal, $"{sparseTotal} bytes is {(double)sparseTotal / denseTotal:F3} of dense");
    }

    [Fact]
    public void BadInputIsNamed()
    {
        Init.ManualSeed(1);
        using var layer = new Linear(10, 4, WeightFormat.Csr(0.5));
        using var x = Tensor.Zeros(new Shape(3, 9));
        var e = Assert.Throws<ShapeMismatchException>(() => layer.Forward(x));
        Assert.Contains("does not fit a csr [4, 10] weight", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Linear(10, 4, WeightFormat.Csr(0)));
    }
}
