// The smallest complete sharded QLoRA loop. Run: bnbrun --nproc 2 --standalone examples/train/bin/Release/net10.0/train.dll [MODEL_DIR] [CORPUS.txt]
// (defaults: the examples' base model and Jane Austen from the data cache; see qlora.sh for the full job).
using BnbDist.Collectives;
using BnbDist.Examples.Llama;
using BnbDist.Examples.Llama.Corpora;
using BnbDist.Examples.Llama.Data;
using BnbDist.Examples.Llama.Modeling;
using BnbDist.Examples.Llama.Training;
using BnbDist.Nn.Surgery;
using BnbDist.Optim8bit;
using BnbDist.Optim8bit.Config;
using BnbDist.Sharding;
using static TorchSharp.torch;

return DistributedEnvironment.RunWorker(env =>
{
    // 1. Join the process group bnbrun set up (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
    var (store, comm) = env.InitProcessGroup();
    using var _ = store;
    using var __ = comm;

    // 2. Load the base model, quantize every linear to NF4 with double quant, add LoRA, freeze the rest.
    var (model, tokenizer, _, _) = LlamaCheckpoint.Load(args.Length > 0 ? args[0] : DataCache.BaseModelDirectory());
    ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { QuantType = BnbDist.QuantType.NF4, UseDoubleQuant = true });
    manual_seed(0);
    ModelSurgery.AddLora(model, new LoraConfig { R = 16, Alpha = 32, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] });
    foreach (var (name, p) in model.named_parameters())
    {
        p.requires_grad = name.Contains(".lora_", StringComparison.Ordinal);
    }

    // 3. Shard: each decoder layer, then the root. Every rank now holds 1/N of the weights.
    foreach (var layer in model.Model.Layers)
    {
        FullyShard.Apply(layer, comm);
    }

    var root = FullyShard.Apply(model, comm);

    // 4. An 8-bit paged AdamW over this rank's shards (8-bit or 32-bit state decided by the whole tensor's size).
    ShardedOptimizer.ConfigureStateBits(root, GlobalOptimManager.Instance);
    using var optimizer = new PagedAdamW8bit(root.Parameters(), lr: 2e-3, weightDecay: 0);

    // 5. This rank's share of the corpus, packed into 128-token sequences.
    var documents = args.Length > 1 ? [new TextDocument(args[1], File.ReadAllText(args[1]))] : JaneAustenCorpus.Load();
    var data = PackedDataset.FromDocuments(documents, tokenizer, 128).Shuffled(0).Shard(env.Rank, env.WorldSize);

    // 6. Train: forward through the root (blocks gather their shards), backward + gradient reduce-scatter, clip, step.
    for (var step = 0; step < 20; step++)
    {
        using var scope = NewDisposeScope();
        var batch = data.Batch(step * 4 % (data.Count - 4), 4);
        var loss = CausalLm.Loss(model.call(batch), batch);
        root.Backward(loss);
        root.ClipGradNorm(1.0);
        optimizer.step();
        optimizer.zero_grad();
        comm.AllReduce(loss = loss.detach(), ReduceOp.Avg);
        if (env.Rank == 0)
        {
            Console.WriteLine($"step {step} loss {loss.item<float>():F4}");
        }
    }

    // 7. Save the LoRA adapter (peft format) from the gathered weights.
    root.Unshard();
    if (env.Rank == 0)
    {
        ModelSurgery.SaveAdapter(model, "train-adapter", new LoraConfig { R = 16, Alpha = 32 });
    }

    root.Reshard();
    comm.Barrier();
    return 0;
});
