using BnbDist.Examples.Llama.Modeling;
using BnbDist.Nn.Surgery;
using static TorchSharp.torch;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>
/// Activation checkpointing keeps one layer input per checkpoint between forward and backward, nothing more, and backward
/// leaves nothing per layer behind. Measured on the CPU as native heap bytes (glibc), the CPU stand-in for
/// <c>torch.cuda.memory_allocated</c>; layer outputs are 2 MiB so that allocator noise stays well below one.
/// </summary>
[Collection("global-rng")]
public sealed class CheckpointMemoryTests
{
    private const int Chain = 6;

    /// <summary>
    /// A chain of checkpointed 4-bit + LoRA decoder layers: each checkpoint adds about its output (the next one's saved
    /// input), not also TorchSharp's empty_like output cache (which doubled it); after backward, with the graph and the
    /// caller's scope still alive, the per-layer gradients wrappers (engine's grad_output, returned input grad) are gone.
    /// </summary>
    [Fact]
    public void EachCheckpointRetainsOnlyItsOutputAndBackwardRetainsNothingPerLayer()
    {
        Assert.SkipUnless(NativeHeap.AllocatedBytes() is not null, "needs glibc's mallinfo2 to read the native heap");
        var layer = QLoraLayer();
        using var x0 = randn(1, 2048, 256);
        var hiddenBytes = x0.NumberOfElements * x0.ElementSize;
        using (no_grad())
        {
            layer.call(x0).Dispose(); // quantizes the weights (first forward)
        }

        using var scope = NewDisposeScope();
        var h = x0.detach().requires_grad_(true);
        Settle();
        var heap = new List<long> { NativeHeap.AllocatedBytes()!.Value };
        for (var i = 0; i < Chain; i++)
        {
            h = ActivationCheckpoint.Apply(layer, h);
            heap.Add(NativeHeap.AllocatedBytes()!.Value);
        }

        // Median: glibc occasionally moves a few MiB between arenas in one step.
        var growth = heap.Zip(heap.Skip(1), (a, b) => b - a).Order().ToList()[Chain / 2];
        Assert.True(growth < 1.5 * hiddenBytes, $"each checkpoint kept {growth} bytes; its output is {hiddenBytes}");

        var afterForward = heap[^1];
        h.sum().backward();
        ActivationCheckpoint.ThrowIfBackwardFailed();
        Settle();
        var backwardKept = NativeHeap.AllocatedBytes()!.Value - afterForward;
        // Legitimately kept: the chain input's gradient (one output), plus allocator slack; a per-layer leak of even one
        // output would make it Chain + 1.
        Assert.True(backwardKept < 4 * hiddenBytes, $"backward left {backwardKept} bytes for {Chain} layers of {hiddenBytes}");
        Assert.NotNull(layer.parameters().First(p => p.requires_grad).grad);
    }

    /// <summary>Finalizes unreachable wrappers so that only what something still references is counted.</summary>
    private static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    private static nn.Module<Tensor, Tensor> QLoraLayer()
    {
        manual_seed(5);
        var config = new LlamaConfig
        {
            VocabSize = 64,
            HiddenSize = 256,
            IntermediateSize = 704,
            NumHiddenLayers = 1,
            NumAttentionHeads = 4,
            NumKeyValueHeads = 2,
            MaxPositionEmbeddings = 2048,
            RmsNormEps = 1e-5,
        };
        var model = new LlamaForCausalLM(config);
        ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { QuantType = QuantType.NF4, UseDoubleQuant = true, BlockSize = 64 });
        ModelSurgery.AddLora(model, new LoraConfig
        {
            R = 4,
            Alpha = 8,
            TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        });
        foreach (var (name, p) in model.named_parameters())
        {
            p.requires_grad = name.Contains(".lora_", StringComparison.Ordinal);
        }

        return model.Model.Layers[0];
    }
}
