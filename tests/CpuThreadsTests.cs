using Frugal.Backends.Cpu;

namespace Frugal.Tests;

/// <summary>The CPU backend's worker threads: every index once, errors rethrown, nested and concurrent loops, and
/// real concurrency when there is more than one thread.</summary>
public class CpuThreadsTests
{
    [Fact]
    public void EveryIndexRunsOnceAcrossManyLoopsWithIdleGapsBetween()
    {
        for (var loop = 0; loop < 200; loop++)
        {
            var count = 1 + loop * 7 % 300;
            var hits = new int[count];
            CpuThreads.For(count, i => Interlocked.Increment(ref hits[i]));
            Assert.All(hits, h => Assert.Equal(1, h));
            if (loop % 50 == 49)
                Thread.Sleep(5);   // long enough for the workers to stop spinning and block
        }
    }

    [Fact]
    public void ABodysExceptionIsRethrownWithItsTypeAfterTheOtherIndicesRan()
    {
        var hits = new int[64];
        var e = Assert.Throws<InvalidOperationException>(() => CpuThreads.For(64, i =>
        {
            Interlocked.Increment(ref hits[i]);
            if (i == 17)
                throw new InvalidOperationException("index 17");
        }));
        Assert.Equal("index 17", e.Message);
        Assert.All(hits, h => Assert.Equal(1, h));
        var after = 0;
        CpuThreads.For(10, _ => Interlocked.Increment(ref after));
        Assert.Equal(10, after);
    }

    [Fact]
    public void ALoopInsideALoopsBodyRunsToTheEnd()
    {
        var hits = new int[8 * 16];
        CpuThreads.For(8, i => CpuThreads.For(16, j => Interlocked.Increment(ref hits[i * 16 + j])));
        Assert.All(hits, h => Assert.Equal(1, h));
    }

    [Fact]
    public void LoopsStartedByManyThreadsAtOnceAllFinish()
    {
        var totals = new long[4];
        var callers = Enumerable.Range(0, totals.Length).Select(t => new Thread(() =>
        {
            for (var loop = 0; loop < 100; loop++)
            {
                var sum = 0L;
                CpuThreads.For(50, i => Interlocked.Add(ref sum, i));
                totals[t] += sum;
            }
        })).ToArray();
        foreach (var c in callers)
            c.Start();
        foreach (var c in callers)
            c.Join();
        Assert.All(totals, s => Assert.Equal(100L * (49 * 50 / 2), s));
    }

    [Fact]
    public void NotParallelRunsOnTheCallingThreadOnly()
    {
        var me = Environment.CurrentManagedThreadId;
        var others = 0;
        CpuThreads.For(100, _ =>
        {
            if (Environment.CurrentManagedThreadId != me)
                Interlocked.Increment(ref others);
        }, parallel: false);
        Assert.Equal(0, others);
    }

    [Fact]
    public void TwoIndicesRunAtTheSameTimeWhenThereAreTwoThreads()
    {
        if (CpuThreads.Count == 1)
        {
            var me = Environment.CurrentManagedThreadId;
            CpuThreads.For(4, _ => Assert.Equal(me, Environment.CurrentManagedThreadId));
            return;
        }
        // Index 0 waits for index 1 to start on another thread. Other tests run loops concurrently, and a loop
        // started while another runs goes serial, so a few tries are allowed; one overlap proves the threads.
        for (var attempt = 0; attempt < 50; attempt++)
        {
            using var started = new ManualResetEventSlim();
            var overlapped = false;
            CpuThreads.For(2, i =>
            {
                if (i == 1)
                    started.Set();
                else
                    overlapped = started.Wait(TimeSpan.FromMilliseconds(200));
            });
            if (overlapped)
                return;
        }
        Assert.Fail("in 50 loops of two indices, index 1 never started while index 0 ran");
    }
}
