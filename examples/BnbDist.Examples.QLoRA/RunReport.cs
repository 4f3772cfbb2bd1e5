using System.Text.Json;
using ScottPlot;
using Spectre.Console;

namespace BnbDist.Examples.QLoRA;

/// <summary>One line of <c>metrics.jsonl</c>.</summary>
public sealed record StepMetrics(int Step, double Loss, double LearningRate, double GradNorm, long Tokens, double TokensPerSecond,
    double ElapsedSeconds, long PeakRssBytes);

/// <summary>The end-of-run summary (<c>summary.json</c>).</summary>
public sealed record RunSummary(int WorldSize, string Device, int StartStep, int Steps, double EvalLossBefore, double PerplexityBefore,
    double EvalLossAfter, double PerplexityAfter, double FinalTrainLoss, double TokensPerSecond, string SampleBefore, string SampleAfter,
    string? Checkpoint, string Adapter, long TrainableParameters, long LocalBytes, long FullBytes);

/// <summary>What rank 0 leaves for people to look at: metrics as JSONL, a loss-curve PNG, a summary table and JSON.</summary>
internal sealed class RunReport(string directory, bool resume)
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = false };
    private readonly string metricsPath = Path.Combine(directory, "metrics.jsonl");
    private readonly List<StepMetrics> steps = resume ? Read(Path.Combine(directory, "metrics.jsonl")) : [];
    private bool truncated;

    public IReadOnlyList<StepMetrics> Steps => steps;

    public void Add(StepMetrics m)
    {
        if (!truncated)
        {
            // A resumed run rewrites the metrics up to where its checkpoint was, then appends.
            steps.RemoveAll(s => s.Step >= m.Step);
            File.WriteAllLines(metricsPath, steps.Select(s => JsonSerializer.Serialize(s, Json)));
            truncated = true;
        }

        steps.Add(m);
        File.AppendAllLines(metricsPath, [JsonSerializer.Serialize(m, Json)]);
    }

    /// <summary>Writes loss.png; null (with the reason on stderr) where SkiaSharp (managed or native) cannot load.</summary>
    public string? PlotLoss()
    {
        try
        {
            return WritePlot();
        }
        catch (Exception ex) when (ex is TypeInitializationException or DllNotFoundException or FileNotFoundException or FileLoadException)
        {
            Console.Error.WriteLine($"qlora: no loss.png ({ex.GetBaseException().Message}); metrics.jsonl has the same data.");
            return null;
        }
    }

    private string WritePlot()
    {
        var path = Path.Combine(directory, "loss.png");
        var plot = new Plot();
        var line = plot.Add.Scatter(steps.Select(s => (double)s.Step).ToArray(), steps.Select(s => s.Loss).ToArray());
        line.LegendText = "train loss (mean over ranks)";
        plot.Title("QLoRA fine-tuning");
        plot.XLabel("step");
        plot.YLabel("loss");
        plot.SavePng(path, 900, 500);
        return path;
    }

    public void WriteSummary(RunSummary summary)
    {
        File.WriteAllText(Path.Combine(directory, "summary.json"), JsonSerializer.Serialize(summary, new JsonSerializerOptions(Json) { WriteIndented = true }));
        var table = new Table().Title("QLoRA run").AddColumn("what").AddColumn("value");
        table.AddRow("ranks / device", $"{summary.WorldSize} / {summary.Device}");
        table.AddRow("steps", $"{summary.StartStep} → {summary.Steps}");
        table.AddRow("held-out loss (perplexity) before", $"{summary.EvalLossBefore:F4} ({summary.PerplexityBefore:F2})");
        table.AddRow("held-out loss (perplexity) after", $"{summary.EvalLossAfter:F4} ({summary.PerplexityAfter:F2})");
        table.AddRow("final train loss", $"{summary.FinalTrainLoss:F4}");
        table.AddRow("tokens/s (all ranks)", $"{summary.TokensPerSecond:F0}");
        table.AddRow("trainable parameters", $"{summary.TrainableParameters:N0}");
        table.AddRow("bytes held by rank 0 / whole model", $"{summary.LocalBytes:N0} / {summary.FullBytes:N0}");
        table.AddRow("checkpoint", Markup.Escape(summary.Checkpoint ?? "-"));
        table.AddRow("LoRA adapter", Markup.Escape(summary.Adapter));
        table.AddRow("sample before", Markup.Escape(summary.SampleBefore));
        table.AddRow("sample after", Markup.Escape(summary.SampleAfter));
        AnsiConsole.Write(table);
    }

    private static List<StepMetrics> Read(string path) =>
        File.Exists(path) ? [.. File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => JsonSerializer.Deserialize<StepMetrics>(l, Json)!)] : [];
}
