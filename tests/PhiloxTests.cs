using Frugal.Backends;

namespace Frugal.Tests;

/// <summary>The vector fill of stochastic rounding offsets gives, index for index, the values of the scalar
/// definition, and that definition is the documented arrangement of Philox words.</summary>
public class PhiloxTests
{
    [Theory]
    [InlineData(0ul, 0ul, 1)]
    [InlineData(7ul, 1ul, 15)]
    [InlineData(42ul, 3ul, 16)]
    [InlineData(42ul, 32ul, 64)]                         // whole runs of 32 only
    [InlineData(0xDEADBEEFCAFEul, 4ul, 256)]
    [InlineData(5ul, 31ul, 2)]                           // a run across a boundary of 32
    [InlineData(123ul, (0xFFFFFFFFul - 5) * 8, 77)]      // the block counter's low word wraps inside the run
    [InlineData(ulong.MaxValue, (1ul << 40) + 2, 1000)]  // a key with both words set; a block counter's high word set
    public void RoundingOffsetsMatchRoundingOffsetAtEveryIndex(ulong seed, ulong first, int count)
    {
        var values = new float[count];
        Philox.RoundingOffsets(seed, first, values);
        for (var i = 0; i < count; i++)
            Assert.True(Philox.RoundingOffset(seed, first + (ulong)i) == values[i], $"index {first + (ulong)i}: {values[i]} vs {Philox.RoundingOffset(seed, first + (ulong)i)}");
    }

    [Fact]
    public void RoundingOffsetsSplitEachBlockIntoEightSixteenBitHalves()
    {
        const ulong Seed = 99;
        var values = new float[64];
        Philox.RoundingOffsets(Seed, 64, values);   // elements 64 .. 127: blocks 8 .. 15
        var seen = new HashSet<float>();
        for (var block = 8ul; block < 16; block++)
        {
            var (w0, w1, w2, w3) = Philox.Block(block, 0, Seed);
            uint[] words = [w0, w1, w2, w3];
            for (var word = 0; word < 4; word++)
            {
                for (var half = 0; half < 2; half++)
                {
                    // Element 32q + 16·half + 4·word + block % 4 of the run from 32·2.
                    var index = (int)((block / 4 - 2) * 32) + 16 * half + 4 * word + (int)(block % 4);
                    Assert.Equal(((words[word] >> (16 * half)) & 0xFFFF) / 65536.0f, values[index]);
                    seen.Add(values[index]);
                }
            }
        }
        Assert.True(seen.Count > 60, $"{seen.Count} distinct offsets among 64");   // every element has its own bits
        Assert.All(values, u => Assert.InRange(u, 0f, 1f - 1f / 65536));
    }
}
