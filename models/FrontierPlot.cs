using System.Globalization;
using ScottPlot;

namespace Frugal.Models;

/// <summary>The frontier's picture: the metric against the whole run's peak training memory (log scale), one line per
/// recipe through its widths with error bars over the seeds, the dense curve in black, the Pareto frontier dashed and
/// the budget as a vertical line; PNG and SVG.</summary>
internal static class FrontierPlot
{
    private const double MiB = 1024.0 * 1024;

    public static void Draw(string pathWithoutExtension, string title, string metric, IReadOnlyList<FrontierRow> rows, IReadOnlyList<FrontierRow> frontier, long? budget, bool higherIsBetter)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category20();
        var dense = Recipe.Dense.ToString();
        var recipes = rows.Select(r => r.Recipe).Distinct().OrderBy(r => r == dense ? 0 : 1).ToList();
        for (var i = 0; i < recipes.Count; i++)
        {
            var series = rows.Where(r => r.Recipe == recipes[i]).OrderBy(r => r.Width).ToList();
            var xs = series.Select(r => Math.Log10(r.PeakBytes / MiB)).ToArray();
            var ys = series.Select(r => r.Mean).ToArray();
            var color = recipes[i] == dense ? Colors.Black : palette.GetColor(i);
            var line = plot.Add.Scatter(xs, ys, color);
            line.LegendText = recipes[i] == dense ? "dense (fp32 Adam)" : recipes[i];
            line.LineWidth = recipes[i] == dense ? 3 : 1.5f;
            line.MarkerSize = 7;
            line.MarkerShape = Shape(recipes[i]);
            if (recipes[i] == dense)
            {
                foreach (var (r, x) in series.Zip(xs))
                {
                    var label = plot.Add.Text(string.Create(CultureInfo.InvariantCulture, $"W{r.Width}"), x, r.Mean);
                    label.LabelAlignment = higherIsBetter ? Alignment.UpperCenter : Alignment.LowerCenter;
                    label.LabelFontSize = 11;
                    label.LabelOffsetY = higherIsBetter ? 6 : -6;
                }
            }
            if (series.Any(r => r.Seeds > 1))
            {
                var bars = plot.Add.ErrorBar(xs, ys, [.. series.Select(r => r.Std)]);
                bars.Color = color;
            }
        }
        if (frontier.Count > 0)
        {
            var pareto = plot.Add.Scatter(frontier.Select(r => Math.Log10(r.PeakBytes / MiB)).ToArray(), frontier.Select(r => r.Mean).ToArray(), Colors.Gray);
            pareto.LegendText = "Pareto frontier";
            pareto.LinePattern = LinePattern.Dashed;
            pareto.LineWidth = 2;
            pareto.MarkerSize = 0;
        }
        if (budget is { } b)
        {
            var limit = plot.Add.VerticalLine(Math.Log10(b / MiB), 1.5f, Colors.Red, LinePattern.Dotted);
            limit.LegendText = string.Create(CultureInfo.InvariantCulture, $"budget {b / MiB:F2} MiB");
        }
        plot.Axes.Bottom.TickGenerator = LogTicks(rows.Select(r => r.PeakBytes / MiB).Concat(budget is { } bb ? [bb / MiB] : []));
        plot.Title(title);
        plot.XLabel("peak training memory, whole run (MiB, log scale)");
        plot.YLabel(metric);
        plot.ShowLegend(higherIsBetter ? Alignment.LowerRight : Alignment.UpperRight);
        plot.SavePng(pathWithoutExtension + ".png", 1000, 620);
        plot.SaveSvg(pathWithoutExtension + ".svg", 1000, 620);
    }

    /// <summary>One marker per family of formats (dense, low-bit, sparse, low-rank), so that colours that look alike
    /// still tell the families apart.</summary>
    private static MarkerShape Shape(string recipe) => recipe.Split('/')[0].Split('+')[0].Split(':')[0] switch
    {
        "dense" => MarkerShape.FilledCircle,
        "csr" or "bsr" => MarkerShape.FilledSquare,
        "lowrank" => MarkerShape.FilledTriangleUp,
        _ => MarkerShape.FilledDiamond,
    };

    /// <summary>Ticks at 1, 2 and 5 times the powers of ten spanning <paramref name="mib"/> (positions in log10 MiB).</summary>
    private static ScottPlot.TickGenerators.NumericManual LogTicks(IEnumerable<double> mib)
    {
        var logs = mib.Where(v => v > 0).Select(Math.Log10).ToList();
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        if (logs.Count == 0)
            return ticks;
        for (var decade = (int)Math.Floor(logs.Min()) - 1; decade <= (int)Math.Ceiling(logs.Max()); decade++)
        {
            foreach (var m in new[] { 1, 2, 5 })
            {
                var value = m * Math.Pow(10, decade);
                ticks.AddMajor(Math.Log10(value), value.ToString("0.###", CultureInfo.InvariantCulture));
            }
        }
        return ticks;
    }
}
