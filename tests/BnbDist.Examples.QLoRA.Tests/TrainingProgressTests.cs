namespace BnbDist.Examples.QLoRA.Tests;

/// <summary>The piped progress line: the bar fills with the steps of this run (not from step 0 after a resume) and carries the metrics.</summary>
public sealed class TrainingProgressTests
{
    [Theory]
    [InlineData(0, 10, 0)]
    [InlineData(5, 10, 12)]
    [InlineData(10, 10, 24)]
    [InlineData(3, 0, 24)]
    public void BarFillsWithTheFractionDone(int done, int total, int hashes)
    {
        var line = TrainingProgress.Line(done, total, "step x", TimeSpan.FromSeconds(75));
        var bar = line[1..line.IndexOf(']', StringComparison.Ordinal)];
        Assert.Equal(24, bar.Length);
        Assert.Equal(hashes, bar.Count(c => c == '#'));
        Assert.EndsWith("step x eta 00:01:15", line, StringComparison.Ordinal);
    }

    [Fact]
    public void PipedReportPrintsOneLineWithStepLossAndMemoryCountingFromTheResumePoint()
    {
        var original = Console.Out;
        using var captured = new StringWriter();
        Console.SetOut(captured);
        try
        {
            using var progress = new TrainingProgress(first: 4, end: 8, interactive: false);
            Assert.False(progress.IsLive);
            progress.Report(new StepMetrics(Step: 5, Loss: 2.5, LearningRate: 1e-3, GradNorm: 0.75, Tokens: 1024, TokensPerSecond: 512, ElapsedSeconds: 2, PeakRssBytes: 0),
                TimeSpan.FromSeconds(4), " gpu 1/2 MiB");
        }
        finally
        {
            Console.SetOut(original);
        }

        var line = Assert.Single(captured.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("[############------------]  50% step 6/8 loss 2.5000 tok/s 512", line, StringComparison.Ordinal);
        Assert.Contains("grad-norm 0.750 gpu 1/2 MiB eta 00:00:04", line, StringComparison.Ordinal);
    }
}
