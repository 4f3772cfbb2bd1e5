using System.Diagnostics;
using System.Text.Json;
using BnbDist.Tests;

namespace BnbDist.Examples.QLoRA.Tests;

/// <summary>
/// The GPU reference benchmark (`qlora reference`, bench/gpu/run.sh qlora-ref) on a tiny shape on the CPU: the same
/// code path end to end, so it cannot rot between GPU runs.
/// </summary>
[Collection("processes")]
public class ReferenceBenchmarkTests
{
    /// <summary>
    /// All three variants train 2 timed steps (after 1 warm-up) with finite losses; LoRA sits on all seven projections of
    /// every layer (the trainable count is exactly r·(in+out) summed over them); the reference figures are at the top of
    /// the JSON; memory figures are absent on the CPU with the reason given.
    /// </summary>
    [Fact]
    public async Task TinyReferenceRunsEveryVariantAndWritesTheFigures()
    {
        var output = Path.Combine(Directory.CreateTempSubdirectory("bnbdist-ref-").FullName, "qlora-ref-cpu.json");
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in new[] { Bnbrun.Built("examples/BnbDist.Examples.QLoRA", "qlora.dll"), "reference", "--device", "cpu", "--shape", "tiny",
            "--batch", "2", "--seq-len", "16", "--warmup", "1", "--steps", "2", "--out", output })
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(TimeSpan.FromMinutes(3));
        try
        {
            var stderr = p.StandardError.ReadToEndAsync(timeout.Token);
            var stdout = await p.StandardOutput.ReadToEndAsync(timeout.Token);
            await p.WaitForExitAsync(timeout.Token);
            Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}\n{stdout}\n{await stderr}");
        }
        finally
        {
            if (!p.HasExited)
            {
                p.Kill(entireProcessTree: true);
            }
        }

        using var doc = JsonDocument.Parse(File.ReadAllText(output));
        var root = doc.RootElement;
        Assert.True(root.GetProperty("ref_tokens_per_s").GetDouble() > 0);
        Assert.Equal(JsonValueKind.Null, root.GetProperty("ref_peak_gib").ValueKind);

        // hidden 64, MLP 96, 4 heads and 2 KV heads of width 16, 2 layers, r = 16
        const long r = 16, h = 64, kv = 32, mlp = 96;
        const long perLayer = (r * (h + h) * 2) + (r * (h + kv) * 2) + (r * (h + mlp) * 3);
        var details = root.GetProperty("details");
        foreach (var name in new[] { "qlora_nf4_paged_adamw8bit", "bf16_lora_paged_adamw8bit", "qlora_nf4_adamw32bit" })
        {
            var v = details.GetProperty(name);
            Assert.False(v.TryGetProperty("error", out var error), $"{name}: {error}");
            Assert.Equal(2, v.GetProperty("timed_steps").GetInt32());
            Assert.True(v.GetProperty("losses_finite").GetBoolean(), name);
            Assert.True(v.GetProperty("median_step_ms").GetDouble() > 0, name);
            Assert.Equal(2 * perLayer, v.GetProperty("trainable_parameters").GetInt64());
            Assert.Contains("CPU", v.GetProperty("memory_stats").GetString(), StringComparison.Ordinal);
        }

        Assert.Equal("AdamW32bit", details.GetProperty("qlora_nf4_adamw32bit").GetProperty("optimizer").GetString());
        Assert.Equal("PagedAdamW8bit", details.GetProperty("qlora_nf4_paged_adamw8bit").GetProperty("optimizer").GetString());
    }
}
