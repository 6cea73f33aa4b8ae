using Frugal.Backends;

namespace Frugal.Tests;

/// <summary>The vector fill of Philox uniforms gives, index for index, the values of the scalar definition.</summary>
public class PhiloxTests
{
    [Theory]
    [InlineData(0ul, 0ul, 1)]
    [InlineData(7ul, 1ul, 15)]
    [InlineData(42ul, 3ul, 16)]
    [InlineData(0xDEADBEEFCAFEul, 4ul, 256)]
    [InlineData(123ul, 0xFFFFFFFFul - 5, 77)]            // the counter's low word wraps inside the run
    [InlineData(ulong.MaxValue, (1ul << 40) + 2, 1000)]  // a key with both words set; a counter's high word set
    public void UniformsMatchUniformAtEveryIndex(ulong seed, ulong first, int count)
    {
        var values = new float[count];
        Philox.Uniforms(seed, first, values);
        for (var i = 0; i < count; i++)
            Assert.True(Philox.Uniform(seed, first + (ulong)i) == values[i], $"index {first + (ulong)i}: {values[i]} vs {Philox.Uniform(seed, first + (ulong)i)}");
    }
}
