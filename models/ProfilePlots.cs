using Frugal.Memory;
using ScottPlot;

namespace Frugal.Models;

/// <summary>The profiler's pictures: memory by category over one training step (stacked areas), and the peak by
/// category per format (stacked bars), each as PNG and SVG.</summary>
internal static class ProfilePlots
{
    private const int Width = 1000, Height = 560;
    private const double MiB = 1024.0 * 1024;

    private static Color ColorOf(MemoryCategory c) => new ScottPlot.Palettes.Category10().GetColor((int)c);

    /// <summary>Stacked areas of bytes per category over the allocator events of <paramref name="step"/>.</summary>
    public static void StepTimeline(string pathWithoutExtension, string title, IReadOnlyList<TimelinePoint> step)
    {
        var plot = new Plot();
        // Memory is a step function of the events: each point is drawn at its time with the previous bytes, then
        // with its own, so edges are vertical.
        var points = step.SelectMany((p, i) => i == 0 ? [p] : new[] { p with { Bytes = step[i - 1].Bytes }, p }).ToArray();
        var xs = points.Select(p => p.Ms - step[0].Ms).ToArray();
        var below = new double[points.Length];
        foreach (var c in MemoryCategories.All)
        {
            var above = points.Select((p, i) => below[i] + p.Bytes[(int)c] / MiB).ToArray();
            if (above.Zip(below).Any(z => z.First > z.Second))
            {
                var fill = plot.Add.FillY(xs, below, above);
                fill.FillColor = ColorOf(c).WithAlpha(0.8);
                fill.LineColor = ColorOf(c);
                fill.LegendText = c.ToString();
            }
            below = above;
        }
        plot.Title(title);
        plot.XLabel("time into the step (ms)");
        plot.YLabel("allocated (MiB)");
        plot.ShowLegend(Alignment.UpperLeft);
        plot.Axes.Margins(bottom: 0);
        Save(plot, pathWithoutExtension);
    }

    /// <summary>One stacked bar per run: the category peaks (MiB), and a marker label with the peak of all at once.</summary>
    public static void PeaksPerFormat(string pathWithoutExtension, string title, IReadOnlyList<(string Label, MemoryReport Report)> runs)
    {
        // Horizontal bars, first run on top: format names of any length stay readable on the left axis.
        var plot = new Plot();
        var bars = new List<Bar>();
        for (var i = 0; i < runs.Count; i++)
        {
            var y = runs.Count - 1 - i;
            double bottom = 0;
            foreach (var c in MemoryCategories.All)
            {
                var v = runs[i].Report.Peak[c] / MiB;
                if (v <= 0)
                    continue;
                bars.Add(new Bar { Position = y, ValueBase = bottom, Value = bottom + v, FillColor = ColorOf(c) });
                bottom += v;
            }
            var total = plot.Add.Text($" at once {runs[i].Report.PeakTotal / MiB:F2}", bottom, y);
            total.LabelAlignment = Alignment.MiddleLeft;
        }
        plot.Add.Bars(bars).Horizontal = true;
        foreach (var c in MemoryCategories.All.Where(c => runs.Any(r => r.Report.Peak[c] > 0)))
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = c.ToString(), FillColor = ColorOf(c) });
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. Enumerable.Range(0, runs.Count).Select(i => (double)(runs.Count - 1 - i))], [.. runs.Select(r => r.Label)]);
        plot.Title(title);
        plot.YLabel("weight format");
        plot.XLabel("peak by category (MiB, stacked); \"at once\": the most bytes live together");
        plot.ShowLegend(Alignment.LowerRight);
        plot.Axes.Margins(left: 0, right: 0.25);
        Save(plot, pathWithoutExtension, Math.Max(Height, 120 + 38 * runs.Count));
    }

    private static void Save(Plot plot, string pathWithoutExtension, int height = Height)
    {
        plot.SavePng(pathWithoutExtension + ".png", Width, height);
        plot.SaveSvg(pathWithoutExtension + ".svg", Width, height);
    }
}
