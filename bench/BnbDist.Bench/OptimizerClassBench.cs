using BnbDist.Optim8bit;
using BnbDist.Optim8bit.Backends;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>
/// Optimizer rows timed through the public classes (what users call), on <c>count</c> f32 parameters of
/// <c>elements</c> each with fixed random gradients: TorchSharp's own AdamW and PagedAdamW8bit (states resident, and
/// paged through host memory) on every device; on the CPU also AdamW8bit, AdamW32bit and Lion8bit (on CUDA those are
/// the fused-kernel rows of <see cref="OptimizerBench"/>). Bytes count what the update must read and write.
/// </summary>
internal sealed class OptimizerClassBench(Device device, Timing timing, int count, long elements)
{
    /// <summary>State bytes per parameter, by row name.</summary>
    public Dictionary<string, string> StateBytes { get; } = [];

    public IEnumerable<BenchResult> Run()
    {
        var size = $"{count}x{(elements % (1 << 20) == 0 ? $"{elements >> 20}M" : $"{elements}")}";
        var cpu = device.type != DeviceType.CUDA;
        if (cpu)
        {
            yield return Measure($"adamw8bit_step_{size}", ps => new AdamW8bit(ps), StepBytes(2, 1), null);
        }

        yield return Measure($"torch_adamw_step_{size}", ps => optim.AdamW(ps), StepBytes(2, 4), "TorchSharp torch.optim.AdamW (per-parameter ops, f32 states)");
        if (cpu)
        {
            yield return Measure($"adamw32bit_step_{size}", ps => new AdamW32bit(ps), StepBytes(2, 4), "BnbDist AdamW32bit (f32 states)");
            yield return Measure($"lion8bit_step_{size}", ps => new Lion8bit(ps), StepBytes(1, 1), null);
        }

        yield return Measure($"paged_adamw8bit_step_{size}_resident", ps => new PagedAdamW8bit(ps, paging: new PagingOptions(PagedMode.Resident)), StepBytes(2, 1),
            "PagedMode.Resident: states on the parameters' device");
        yield return Measure($"paged_adamw8bit_step_{size}_paged", ps => new PagedAdamW8bit(ps), StepBytes(2, 1),
            "PagedMode.Paged: states in host memory, staged per page (bytes exclude the staging copies)",
            opt => $"device staging {(double)((PagedAdamW8bit)opt).StagingBytes / (count * elements):F4} bytes/param");
    }

    private BenchResult Measure(string name, Func<List<Parameter>, optim.Optimizer> make, long bytes, string? note, Func<optim.Optimizer, string>? detail = null)
    {
        using var scope = NewDisposeScope();
        manual_seed(42);
        var ps = Enumerable.Range(0, count).Select(_ => new Parameter(randn(elements, device: device).mul_(0.1f))).ToList();
        foreach (var p in ps)
        {
            // Gradients through autograd (TorchSharp has no grad setter): d/dp sum(p·g) = g.
            using var g = randn(elements, device: device).mul_(0.01f);
            (p * g).sum().backward();
        }

        using var opt = make(ps);
        var sorted = timing.Measure(_ => opt.step());
        var perParam = StateBytesOf(opt) / (double)(count * elements);
        StateBytes[name] = $"{perParam:F4}";
        var backend = opt is Optimizer8bit ? $"step backend: {OptimizerBackends.NameFor(device)}" : null;
        var full = string.Join("; ", new[] { note, detail?.Invoke(opt), backend, $"state {perParam:F4} bytes/param" }.Where(s => s is not null));
        return new BenchResult(name, Timing.Median(sorted), sorted[0], sorted[^1], timing.Repeats, bytes, full, StateBytesPerParam: perParam);
    }

    /// <summary>Parameter (r+w), gradient (r), each state (r+w), plus the per-block absmax (r+w) of 8-bit states.</summary>
    private long StepBytes(int states, int stateElementBytes)
    {
        var n = count * elements;
        var absmax = stateElementBytes == 1 ? 2 * 4 * states * ((elements + 255) / 256) * count : 0;
        return (3 * 4 * n) + (2 * states * stateElementBytes * n) + absmax;
    }

    private static long StateBytesOf(optim.Optimizer opt) => opt switch
    {
        Optimizer8bit o => o.States.Sum(s => new[] { s.State1, s.State2, s.Absmax1, s.Absmax2 }
            .Where(t => t is not null).Sum(t => t!.numel() * t.element_size())),
        OptimizerHelper h => h.state_dict().State.OfType<TorchSharp.Modules.AdamW.State>().Sum(s => (s.exp_avg.numel() * 4) + (s.exp_avg_sq.numel() * 4)),
        _ => 0,
    };
}
