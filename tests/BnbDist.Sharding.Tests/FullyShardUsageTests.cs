using BnbDist.Nn;
using BnbDist.Nn.Surgery;
using BnbDist.Tests;
using ShardingWorker;
using static TorchSharp.torch;

namespace BnbDist.Sharding.Tests;

/// <summary>FullyShard's API contract on 1–2 in-process ranks (threads with real TCP communicators).</summary>
public class FullyShardUsageTests
{
    private static TinyLm QLoraModel()
    {
        var model = new TinyLm(64, 128, 384, nLayers: 2);
        ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { QuantType = QuantType.NF4 });
        ModelSurgery.AddLora(model, new LoraConfig { R = 8, TargetModules = ["gate_proj", "up_proj", "down_proj"] });
        foreach (var (name, p) in model.named_parameters())
        {
            p.requires_grad = name.Contains("lora_", StringComparison.Ordinal);
        }

        return model;
    }

    private static FsdpModule Wrap(TinyLm model, Collectives.ICommunicator comm)
    {
        foreach (var layer in model.Layers)
        {
            FullyShard.Apply(layer, comm);
        }

        return FullyShard.Apply(model, comm);
    }

    private static Tensor Tokens(int seed) => randint(0, 64, [2, 9], generator: new Generator((ulong)seed));

    /// <summary>Applying to the root before its blocks is refused (FSDP2 is applied bottom-up).</summary>
    [Fact]
    public void ApplyingTopDownIsRefused() => Ranks.Run(1, comm =>
    {
        var model = QLoraModel();
        FullyShard.Apply(model, comm);
        var ex = Assert.Throws<ShardingException>(() => FullyShard.Apply(model.Layers.First(), comm));
        Assert.Contains("bottom-up", ex.Message, StringComparison.Ordinal);
    });

    /// <summary>Step operations belong to the root: calling them on a block names the block.</summary>
    [Fact]
    public void StepOperationsOnABlockAreRefused() => Ranks.Run(1, comm =>
    {
        var model = QLoraModel();
        var block = FullyShard.Apply(model.Layers.First(), comm);
        FullyShard.Apply(model, comm);
        Assert.False(block.IsRoot);
        Assert.Throws<ShardingException>(() => block.Parameters());
        Assert.Throws<ShardingException>(() => block.SyncGradients());
    });

    /// <summary>Forward through a model whose blocks were sharded but whose root was not fails before training.</summary>
    [Fact]
    public void ForwardWithoutAShardedRootIsRefused() => Ranks.Run(1, comm =>
    {
        var model = QLoraModel();
        foreach (var layer in model.Layers)
        {
            FullyShard.Apply(layer, comm);
        }

        var ex = Assert.Throws<ShardingException>(() => model.call(Tokens(1)));
        Assert.Contains("FullyShard.Apply on the model's root", ex.Message, StringComparison.Ordinal);
    });

    /// <summary>An int8 layer with trainable fp16 weights (re-quantized every forward) is named in the error rather than silently replicated.</summary>
    [Fact]
    public void Int8LayersWithFp16WeightsAreRefusedByName() => Ranks.Run(1, comm =>
    {
        using var layer = new Linear8bitLt(64, 64);
        var ex = Assert.Throws<ShardingException>(() => FullyShard.Apply(layer, comm));
        Assert.Contains("Linear8bitLt", ex.Message, StringComparison.Ordinal);
    });

    /// <summary>
    /// Gradient accumulation in NoSync (two micro-batches, one reduce-scatter) leaves the same master gradients as one
    /// backward of the summed losses, and the global-norm clip matches clip_grad_norm_ on the unsharded gradients.
    /// </summary>
    [Fact]
    public void NoSyncAccumulatesAndClipUsesTheGlobalNorm() => Ranks.Run(2, comm =>
    {
        var model = QLoraModel();
        var root = Wrap(model, comm);
        var (x1, x2) = (Tokens(10 + comm.Rank), Tokens(20 + comm.Rank));

        using (root.NoSync())
        {
            root.Backward(Loss(model, x1));
        }

        root.Backward(Loss(model, x2));
        var accumulated = root.Parameters().Select(p => p.grad!.clone()).ToList();
        foreach (var p in root.Parameters())
        {
            p.grad = null;
        }

        root.Backward(Loss(model, x1).add(Loss(model, x2)));
        foreach (var (a, p) in accumulated.Zip(root.Parameters()))
        {
            Assert.True(a.allclose(p.grad!, rtol: 1e-5, atol: 1e-7), "accumulated gradient differs from the summed-loss gradient");
        }

        var expectedNorm = Math.Sqrt(accumulated.Sum(g => g.square().sum().item<float>()));
        var globalSq = tensor(new[] { (float)(expectedNorm * expectedNorm) });
        comm.AllReduce(globalSq);
        var norm = root.ClipGradNorm(1e-3);
        Assert.Equal(Math.Sqrt(globalSq.item<float>()), norm, 4);
        var clipped = Math.Sqrt(root.Parameters().Sum(p => p.grad!.square().sum().item<float>()));
        var clippedSq = tensor(new[] { (float)(clipped * clipped) });
        comm.AllReduce(clippedSq);
        Assert.Equal(1e-3, Math.Sqrt(clippedSq.item<float>()), 6);
    });

    /// <summary>Saving the shards of one wrapped model and loading them into another (differently initialized) gives
    /// the same outputs; a shard of the wrong size is refused by name.</summary>
    [Fact]
    public void ShardedStateRoundTripsAndWrongShardsAreNamed() => Ranks.Run(2, comm =>
    {
        var a = QLoraModel();
        var rootA = Wrap(a, comm);
        using (no_grad())
        {
            foreach (var p in rootA.Parameters())
            {
                p.add_(0.01); // LoRA B starts at zero: make the adapters matter
            }
        }

        var saved = rootA.ShardedState().ToDictionary(s => s.Name, s => s.Local.clone());
        var replicated = rootA.ReplicatedState().ToDictionary(r => r.Key, r => r.Value.clone());
        // Each 4-bit weight (2 layers x gate/up/down) has its double-quant offset, quant_map, nested_quant_map and packed
        // quant-state JSON; plus one model metadata entry.
        Assert.Equal(6, replicated.Keys.Count(k => k.EndsWith(".weight.nested_offset", StringComparison.Ordinal)));
        Assert.Equal((6 * 4) + 1, replicated.Count);
        var b = QLoraModel();
        var rootB = Wrap(b, comm);
        rootB.LoadShardedState(saved, replicated);
        using (no_grad())
        {
            var x = Tokens(5);
            Assert.True(a.call(x).allclose(b.call(x), rtol: 0, atol: 0), "loaded model computes differently");
            Assert.True(rootB.Module.parameters().All(p => p.numel() == 0), "an inference forward must reshard");
        }

        var name = saved.Keys.First(k => k.EndsWith("weight.absmax", StringComparison.Ordinal));
        saved[name] = zeros(saved[name].numel() + 1, saved[name].dtype);
        var ex = Assert.Throws<ShardingException>(() => rootB.LoadShardedState(saved, replicated));
        Assert.Contains(name, ex.Message, StringComparison.Ordinal);
    });

    /// <summary>
    /// Reshard after forward: between a block's forward and its backward only the float parameters stay gathered (the
    /// 4-bit weights are freed and gathered again for backward), and the gradients equal those of a run that keeps
    /// everything gathered.
    /// </summary>
    [Fact]
    public void ReshardAfterForwardFreesFourBitWeightsAndKeepsGradients() => Ranks.Run(2, comm =>
    {
        var grads = new List<List<Tensor>>();
        var first = QLoraModel();
        var second = QLoraModel();
        second.load_state_dict(first.state_dict()); // same weights and adapters, both still unquantized
        foreach (var (model, reshard) in new[] { (first, true), (second, false) })
        {
            var options = new FullyShardOptions { ReshardAfterForward = reshard };
            foreach (var layer in model.Layers)
            {
                FullyShard.Apply(layer, comm, options);
            }

            var root = FullyShard.Apply(model, comm, options);
            var x = Tokens(30 + comm.Rank);
            var loss = Loss(model, x);
            var fourBit = model.modules().OfType<Linear4bit>().ToList();
            Assert.Equal(6, fourBit.Count);
            Assert.All(fourBit, l => Assert.Equal(reshard, l.Weight.numel() == 0));
            Assert.All(root.Parameters(), p => Assert.NotNull(p));
            root.Backward(loss);
            Assert.All(fourBit, l => Assert.Equal(0, l.Weight.numel()));
            grads.Add([.. root.Parameters().Select(p => p.grad!.clone())]);
        }

        foreach (var (a, b) in grads[0].Zip(grads[1]))
        {
            Assert.True(a.allclose(b, rtol: 0, atol: 0), "gradients differ between reshard-after-forward on and off");
        }
    });

    private static Tensor Loss(TinyLm model, Tensor tokens)
    {
        var logits = model.call(tokens.narrow(1, 0, 8));
        return nn.functional.cross_entropy(logits.reshape(-1, 64), tokens.narrow(1, 1, 8).reshape(-1));
    }
}
