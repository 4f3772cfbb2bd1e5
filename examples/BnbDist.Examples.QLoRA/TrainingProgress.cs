using System.Globalization;
using Spectre.Console;

namespace BnbDist.Examples.QLoRA;

/// <summary>
/// Rank 0's progress display: on a terminal a live Spectre.Console progress bar (step, loss, tokens/s, ETA, GPU
/// memory); where output is piped (under bnbrun, which prefixes each worker line with its rank, or in CI) one line per
/// step with a text bar, because a live display cannot redraw through a pipe.
/// </summary>
public sealed class TrainingProgress : IDisposable
{
    private const int BarWidth = 24;
    private readonly int first;
    private readonly int end;
    private readonly TaskCompletionSource finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task? display;
    private readonly ProgressTask? live;

    /// <summary>Starts the display for steps <paramref name="first"/>..<paramref name="end"/> (exclusive).</summary>
    /// <param name="first">The first step this run takes (after a resume, not 0).</param>
    /// <param name="end">One past the last step.</param>
    /// <param name="interactive">Live bar (a terminal) or one line per step; null asks the console.</param>
    public TrainingProgress(int first, int end, bool? interactive = null)
    {
        this.first = first;
        this.end = end;
        if (!(interactive ?? (AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected)))
        {
            return;
        }

        // Spectre's Progress owns the callback's lifetime; run it beside the training loop and feed it from there.
        var started = new TaskCompletionSource<ProgressTask>(TaskCreationOptions.RunContinuationsAsynchronously);
        display = AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn { Width = 16 }, new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask("training", maxValue: Math.Max(1, end - first));
                started.SetResult(task);
                await finished.Task.ConfigureAwait(false);
                task.Value = task.MaxValue;
                ctx.Refresh();
            });
        live = started.Task.GetAwaiter().GetResult();
    }

    /// <summary>True where the live bar is shown.</summary>
    public bool IsLive => live is not null;

    /// <summary>Reports a finished step.</summary>
    /// <param name="metrics">The step's metrics (step index is 0-based).</param>
    /// <param name="eta">Estimated time to the end of this run.</param>
    /// <param name="gpuMemory">Device memory text (empty on CPU).</param>
    public void Report(StepMetrics metrics, TimeSpan eta, string gpuMemory)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        var done = metrics.Step + 1 - first;
        var fields = string.Create(CultureInfo.InvariantCulture,
            $"step {metrics.Step + 1}/{end} loss {metrics.Loss:F4} tok/s {metrics.TokensPerSecond:F0} lr {metrics.LearningRate:E2} grad-norm {metrics.GradNorm:F3}{gpuMemory}");
        if (live is not null)
        {
            // The live line must fit a terminal beside the bar: the essentials only (metrics.jsonl has the rest).
            live.Description = Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                $"step {metrics.Step + 1}/{end} loss {metrics.Loss:F4} {metrics.TokensPerSecond:F0} tok/s{gpuMemory}"));
            live.Value = done;
            return;
        }

        Console.WriteLine(Line(done, end - first, fields, eta));
    }

    /// <summary>The piped form: <c>[#####-----]  50% step 5/10 loss … eta 00:00:12</c>.</summary>
    /// <param name="done">Steps finished in this run.</param>
    /// <param name="total">Steps this run takes.</param>
    /// <param name="fields">Step, loss, tokens/s and the rest.</param>
    /// <param name="eta">Estimated time left.</param>
    public static string Line(int done, int total, string fields, TimeSpan eta)
    {
        var fraction = total <= 0 ? 1 : Math.Clamp(done / (double)total, 0, 1);
        var filled = (int)Math.Round(fraction * BarWidth);
        var bar = new string('#', filled) + new string('-', BarWidth - filled);
        return string.Create(CultureInfo.InvariantCulture, $"[{bar}] {fraction * 100,3:F0}% {fields} eta {eta:hh\\:mm\\:ss}");
    }

    /// <summary>Lets the live bar finish its last frame.</summary>
    public void Dispose()
    {
        finished.TrySetResult();
        display?.GetAwaiter().GetResult();
    }
}
