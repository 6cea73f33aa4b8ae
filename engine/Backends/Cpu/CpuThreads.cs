using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace Frugal.Backends.Cpu;

/// <summary>
/// The CPU backend's own worker threads, for its parallel loops. A training step runs hundreds of short loops (a
/// GEMM block, an elementwise op over a few hundred kilobytes), so the cost of starting one matters as much as its
/// work: <see cref="Parallel.For(int, int, Action{int})"/> queues tasks to the thread pool and waits for sleeping
/// workers to wake. Here <see cref="Count"/> − 1 dedicated threads spin for a short while after each loop (as an
/// OpenMP runtime does) before they block, so the next loop starts at once; the calling thread takes indices too.
/// One loop runs at a time: a loop started inside a loop's body, or by another thread while one runs, runs on its
/// calling thread. Indices are claimed dynamically; each must write only its own outputs.
/// </summary>
public static class CpuThreads
{
    /// <summary>How long an idle worker spins, waiting for the next loop, before it blocks.</summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 1000;   // 1 ms

    private static readonly Lock Gate = new();
    private static readonly object Sleep = new();
    private static Job? _job;
    private static long _generation;
    private static int _sleepers;

    /// <summary>True on the workers, and on a calling thread while its loop runs: loops started there run serially.</summary>
    [ThreadStatic]
    private static bool t_busy;

    /// <summary>Threads a loop runs on: <c>FRUGAL_NUM_THREADS</c> when set (as OMP_NUM_THREADS for libtorch), else
    /// the processor count.</summary>
    public static int Count { get; } = ReadCount();

    static CpuThreads()
    {
        for (var i = 1; i < Count; i++)
            new Thread(Work) { IsBackground = true, Name = $"frugal-cpu-{i}" }.Start();
    }

    private static int ReadCount()
    {
        var text = Environment.GetEnvironmentVariable("FRUGAL_NUM_THREADS");
        if (string.IsNullOrEmpty(text))
            return Environment.ProcessorCount;
        if (!int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) || n < 1)
            throw new InvalidOperationException($"FRUGAL_NUM_THREADS='{text}' is not a positive whole number of threads");
        return n;
    }

    /// <summary>Runs <paramref name="body"/>(i) for every i in [0, <paramref name="count"/>) on up to
    /// <see cref="Count"/> threads (on the calling thread alone when <paramref name="parallel"/> is false) and
    /// returns when all have finished. The first exception a body throws is rethrown here (the other indices still
    /// run).</summary>
    public static void For(int count, Action<int> body, bool parallel = true)
    {
        if (count <= 0)
            return;
        if (!parallel || count == 1 || Count == 1 || t_busy || !Gate.TryEnter())
        {
            for (var i = 0; i < count; i++)
                body(i);
            return;
        }
        var job = new Job(body, count);
        try
        {
            t_busy = true;
            Volatile.Write(ref _job, job);
            Interlocked.Increment(ref _generation);
            if (Volatile.Read(ref _sleepers) > 0)
            {
                lock (Sleep)
                    Monitor.PulseAll(Sleep);
            }
            job.Run();
            var wait = new SpinWait();
            while (Volatile.Read(ref job.Done) < count)
                wait.SpinOnce(sleep1Threshold: -1);
        }
        finally
        {
            Volatile.Write(ref _job, null);
            t_busy = false;
            Gate.Exit();
        }
        if (job.Error is { } error)
            ExceptionDispatchInfo.Throw(error);
    }

    /// <summary>A worker: runs each new loop's indices, spins a while for the next one, then blocks.</summary>
    private static void Work()
    {
        t_busy = true;
        long seen = 0;
        while (true)
        {
            var until = Stopwatch.GetTimestamp() + SpinTicks;
            while (Volatile.Read(ref _generation) == seen && Stopwatch.GetTimestamp() < until)
                Thread.SpinWait(32);
            if (Volatile.Read(ref _generation) == seen)
            {
                lock (Sleep)
                {
                    // Counted before the last look, so a loop published after it sees a sleeper to wake.
                    Interlocked.Increment(ref _sleepers);
                    while (Volatile.Read(ref _generation) == seen)
                        Monitor.Wait(Sleep);
                    Interlocked.Decrement(ref _sleepers);
                }
            }
            seen = Volatile.Read(ref _generation);
            Volatile.Read(ref _job)?.Run();
        }
    }

    /// <summary>One loop: its body, how many indices, the next unclaimed index, how many finished, the first error.</summary>
    private sealed class Job(Action<int> body, int count)
    {
        private int _next;
        public int Done;
        public Exception? Error;

        /// <summary>Claims and runs indices until none is left.</summary>
        public void Run()
        {
            int i;
            while ((i = Interlocked.Increment(ref _next) - 1) < count)
            {
                try
                {
                    body(i);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref Error, e, null);
                }
                Interlocked.Increment(ref Done);
            }
        }
    }
}
