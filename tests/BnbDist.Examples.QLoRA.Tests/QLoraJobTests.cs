using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using BnbDist.Tests;

namespace BnbDist.Examples.QLoRA.Tests;

/// <summary>Process tests run one at a time (each starts several training processes).</summary>
[CollectionDefinition("processes", DisableParallelization = true)]
public sealed class ProcessesCollection;

/// <summary>
/// The main job end to end on CPU through real bnbrun processes (2 ranks, TCP collectives): the loss goes down, a
/// checkpoint appears, a killed-and-resumed run continues bit for bit, and the saved adapter alone reproduces the
/// held-out loss.
/// </summary>
[Collection("processes")]
public class QLoraJobTests
{
    private static string Job => Bnbrun.Built("examples/BnbDist.Examples.QLoRA", "qlora.dll");

    private static string[] Common(string output, int steps) =>
    [
        "--model", TinyBaseModel.ModelDirectory, "--corpus", TinyBaseModel.CorpusFile, "--out", output,
        "--steps", steps.ToString(CultureInfo.InvariantCulture), "--seq-len", "32", "--micro-batch", "4", "--lr", "1e-2",
        "--warmup", "2", "--checkpoint-every", "4", "--sample-tokens", "8", "--eval-sequences", "8",
    ];

    /// <summary>Two ranks, 8 steps: loss decreases, checkpoints, plot, metrics and adapter are written; an interrupted
    /// run (stopped after 4 steps, then --resume) has the same per-step losses as the uninterrupted one; the adapter
    /// re-applied by a single process gives the same held-out loss as the sharded job measured.</summary>
    [Fact]
    public void TrainsChecksResumesAndTheAdapterReproducesTheEvaluation()
    {
        var straight = Directory.CreateTempSubdirectory("bnbdist-qlora-").FullName;
        Run([.. Common(straight, 8)]);
        var losses = Losses(straight);
        Assert.Equal(8, losses.Length);
        Assert.True(losses[^2..].Average() < losses[..2].Average(), $"loss did not decrease: {string.Join(", ", losses)}");
        Assert.True(File.Exists(Path.Combine(straight, "checkpoints", "step-8", "index.json")), "no complete checkpoint at step 8");
        Assert.True(File.Exists(Path.Combine(straight, "loss.png")));
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(straight, "summary.json")));
        var after = summary.RootElement.GetProperty("eval_loss_after").GetDouble();
        Assert.True(after < summary.RootElement.GetProperty("eval_loss_before").GetDouble(), "held-out loss did not improve");

        var resumed = Directory.CreateTempSubdirectory("bnbdist-qlora-").FullName;
        Run([.. Common(resumed, 8), "--stop-after", "4"]);
        Assert.True(File.Exists(Path.Combine(resumed, "checkpoints", "step-4", "index.json")));
        var output = Run([.. Common(resumed, 8), "--resume"]);
        Assert.Contains("resumed from step 4", output, StringComparison.Ordinal);
        Assert.Equal(losses, Losses(resumed));

        var eval = RunProcess("dotnet", [Job, .. Common(straight, 8), "--eval-adapter", Path.Combine(straight, "adapter")]);
        using var evalJson = JsonDocument.Parse(File.ReadAllText(Path.Combine(straight, "adapter", "eval.json")));
        var again = evalJson.RootElement.GetProperty("held_out_loss").GetDouble();
        Assert.True(Math.Abs(again - after) <= 1e-6 * after, $"adapter alone gives {again:R}, the job measured {after:R}\n{eval}");
    }

    /// <summary>
    /// Across nodes: two bnbrun agents in two network namespaces joined by a veth pair (one rank each, the store on
    /// node 0) run the job and reach exactly the per-step losses of the 2-rank single-node run.
    /// </summary>
    [Fact]
    public void TwoNodesReachTheLossesOfOneNodeWithTwoRanks()
    {
        var single = Directory.CreateTempSubdirectory("bnbdist-qlora-").FullName;
        Run(Common(single, 4));
        using var net = NetNsPair.Create();
        var across = Directory.CreateTempSubdirectory("bnbdist-qlora-nodes-").FullName;
        string[] Node(int rank) => ["--nnodes", "2", "--node-rank", rank.ToString(CultureInfo.InvariantCulture), "--nproc", "1",
            "--master-addr", net.Ip0, "--master-port", "29500", Job, .. Common(across, 4)];
        using var node0 = net.Start(0, Node(0));
        using var node1 = net.Start(1, Node(1));
        Assert.True(node0.Process.WaitForExit(TimeSpan.FromMinutes(3)) && node1.Process.WaitForExit(TimeSpan.FromMinutes(3)), node0.Output + node1.Output);
        node0.Process.WaitForExit();
        node1.Process.WaitForExit();
        Assert.True(node0.Process.ExitCode == 0 && node1.Process.ExitCode == 0, node0.Output + node1.Output);
        Assert.Equal(Losses(single), Losses(across));
    }

    /// <summary>Bad input is reported before any training starts, naming what is wrong, with exit code 2.</summary>
    [Fact]
    public void BadInputIsReportedBeforeTraining()
    {
        var output = Directory.CreateTempSubdirectory("bnbdist-qlora-bad-").FullName;
        var empty = Path.Combine(output, "empty.txt");
        File.WriteAllText(empty, "\n\n");
        var wrongTokenizer = Path.Combine(output, "model");
        CopyDirectory(TinyBaseModel.ModelDirectory, wrongTokenizer);
        Examples.Llama.Tokenization.BpeTokenizer.Train([TinyBaseModel.Text(3, 50)], 300).Save(Path.Combine(wrongTokenizer, "tokenizer.json"));

        foreach (var (args, expected) in new (string[] Args, string Expected)[]
        {
            (["--model", Path.Combine(output, "missing"), "--seq-len", "32"], "no model in"),
            (["--model", TinyBaseModel.ModelDirectory, "--corpus", empty, "--seq-len", "32"], "empty"),
            (["--model", TinyBaseModel.ModelDirectory, "--corpus", TinyBaseModel.CorpusFile, "--seq-len", "65"], "exceeds the model's context"),
            (["--model", wrongTokenizer, "--corpus", TinyBaseModel.CorpusFile, "--seq-len", "32"], "tokenizer"),
        })
        {
            var (code, text) = RunProcessWithCode("dotnet", [Job, .. args, "--out", output, "--steps", "2"]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}\n{text}");
            Assert.Contains(expected, text, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("step 1/", text, StringComparison.Ordinal);
        }
    }

    private static string Run(string[] jobArgs)
    {
        var r = Bnbrun.Run(["--nproc", "2", "--standalone", Job, .. jobArgs]);
        Assert.True(r.ExitCode == 0, r.Output);
        return r.Output;
    }

    private static double[] Losses(string run) =>
        [.. File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble())];

    private static string RunProcess(string file, string[] args)
    {
        var (code, text) = RunProcessWithCode(file, args);
        Assert.True(code == 0, text);
        return text;
    }

    private static (int Code, string Output) RunProcessWithCode(string file, string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout + stderr.Result);
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from))
        {
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        }
    }
}
