using System.Globalization;
using System.Text.Json;
using ScottPlot;

namespace Frugal.Models;

/// <summary><c>train --metrics FILE</c>: one JSON line per optimizer step (<c>{"step", "loss"}</c>) and per epoch
/// (<c>{"epoch", "step", "trainLoss", "testAccuracy", "seconds", "examplesPerSecond"}</c>), flushed as they come, and
/// at the end FILE's name with <c>.png</c>: the loss per step (and its 50-step mean) with the test accuracy per
/// epoch.</summary>
internal sealed class MetricsLog : IDisposable
{
    private const int Smoothing = 50;
    private readonly StreamWriter _writer;
    private readonly List<(long Step, double Loss)> _steps = [];
    private readonly List<(long Step, double Accuracy)> _epochs = [];

    /// <summary>Starts (or replaces) the metrics file at <paramref name="path"/>.</summary>
    public MetricsLog(string path)
    {
        Path = path;
        _writer = new StreamWriter(path, append: false) { AutoFlush = true };
    }

    /// <summary>The metrics file.</summary>
    public string Path { get; }

    /// <summary>The picture written by <see cref="Plot"/>.</summary>
    public string PlotPath => System.IO.Path.ChangeExtension(Path, ".png");

    /// <summary>Records the loss of optimizer step <paramref name="step"/> (1-based).</summary>
    public void Step(long step, double loss)
    {
        _steps.Add((step, loss));
        _writer.WriteLine(JsonSerializer.Serialize(new { step, loss }));
    }

    /// <summary>Records an epoch that ended after <paramref name="step"/> steps.</summary>
    public void Epoch(EpochResult r, long step)
    {
        ArgumentNullException.ThrowIfNull(r);
        _epochs.Add((step, r.TestAccuracy));
        _writer.WriteLine(JsonSerializer.Serialize(new { epoch = r.Epoch, step, trainLoss = r.TrainLoss, testAccuracy = r.TestAccuracy, seconds = r.Seconds, examplesPerSecond = r.ExamplesPerSecond }));
    }

    /// <summary>Draws the loss per step and the test accuracy per epoch into <see cref="PlotPath"/>.</summary>
    public void Plot(string title)
    {
        var plot = new Plot();
        if (_steps.Count > 0)
        {
            var xs = _steps.Select(s => (double)s.Step).ToArray();
            var raw = plot.Add.ScatterLine(xs, [.. _steps.Select(s => s.Loss)], Colors.SteelBlue.WithAlpha(0.35));
            raw.LegendText = "training loss per step";
            var mean = new double[_steps.Count];
            double sum = 0;
            for (var i = 0; i < _steps.Count; i++)
            {
                sum += _steps[i].Loss - (i >= Smoothing ? _steps[i - Smoothing].Loss : 0);
                mean[i] = sum / Math.Min(i + 1, Smoothing);
            }
            var smooth = plot.Add.ScatterLine(xs, mean, Colors.Navy);
            smooth.LegendText = string.Create(CultureInfo.InvariantCulture, $"mean of the last {Smoothing} steps");
            smooth.LineWidth = 2;
        }
        if (_epochs.Count > 0)
        {
            var accuracy = plot.Add.Scatter(_epochs.Select(e => (double)e.Step).ToArray(), _epochs.Select(e => e.Accuracy).ToArray(), Colors.OrangeRed);
            accuracy.LegendText = "test accuracy after each epoch (right axis)";
            accuracy.MarkerSize = 8;
            accuracy.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "test accuracy";
        }
        plot.Title(title);
        plot.XLabel("optimizer step");
        plot.YLabel("cross-entropy");
        plot.ShowLegend(Edge.Bottom);
        plot.SavePng(PlotPath, 900, 560);
    }

    /// <inheritdoc/>
    public void Dispose() => _writer.Dispose();
}
