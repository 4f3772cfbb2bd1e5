using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Tests.Optimizers;

/// <summary>
/// 8-bit optimizers never turn finite gradients into NaN parameters: zeros, tiny (1e-30), huge (1e30, whose square
/// overflows f32) and mixed gradients, in f32 and bf16, over several steps. (bitsandbytes itself stores an infinite
/// absmax for a block whose v overflowed, which makes the whole block NaN at the next step.)
/// </summary>
public class NanSafetyTests
{
    public static TheoryData<string, string, ScalarType> Cases()
    {
        var data = new TheoryData<string, string, ScalarType>();
        foreach (var opt in new[] { "Adam8bit", "AdamW8bit", "SGD8bit", "Lion8bit", "RMSprop8bit", "PagedAdamW8bit" })
        {
            foreach (var grads in new[] { "zeros", "tiny", "huge", "mixed" })
            {
                foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
                {
                    data.Add(opt, grads, dtype);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void FiniteGradientsNeverMakeNaNParameters(string name, string grads, ScalarType dtype)
    {
        // 8-bit state for the large parameter, 32-bit for the small one.
        var ps = new[] { TestGrads.Param(randn(6000).to(dtype)), TestGrads.Param(randn(300).to(dtype)) };
        using var opt = TrainingRun.Create(name, ps);
        for (var step = 0; step < 6; step++)
        {
            foreach (var p in ps)
            {
                using var g = Gradient(grads, p.numel(), step).to(dtype);
                TestGrads.Set(p, g);
            }

            opt.step();
            foreach (var p in ps)
            {
                Assert.False(p.isnan().any().item<bool>(), $"NaN in a parameter after step {step + 1}");
            }
        }

        Assert.All(opt.States.Where(s => s.Is8bit), s => Assert.False(s.Absmax1!.isnan().any().item<bool>()));
        foreach (var p in ps)
        {
            p.Dispose();
        }
    }

    private static Tensor Gradient(string kind, long n, int step) => kind switch
    {
        "zeros" => zeros(n),
        "tiny" => full(n, step % 2 == 0 ? 1e-30f : -1e-30f),
        "huge" => full(n, step % 2 == 0 ? 1e30f : -1e30f),
        _ => tensor(Enumerable.Range(0, (int)n).Select(i => new[] { 0f, 1e-30f, 1e30f, -1e30f, 1f, -1e-30f, -0.5f }[(i + step) % 7]).ToArray()),
    };
}
