using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ShardingWorker;

/// <summary>RMSNorm with a learned scale (Llama's).</summary>
internal sealed class RmsNorm : Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public RmsNorm(long dim)
        : base(nameof(RmsNorm))
    {
        weight = Parameter(ones(dim));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        x.mul(x.square().mean([-1L], keepdim: true).add(1e-5).rsqrt()).mul(weight);
}

/// <summary>A pre-norm SwiGLU MLP block with a residual (the MLP half of a Llama layer).</summary>
internal sealed class Block : Module<Tensor, Tensor>
{
    private readonly RmsNorm norm;
    private readonly Module<Tensor, Tensor> gate_proj;
    private readonly Module<Tensor, Tensor> up_proj;
    private readonly Module<Tensor, Tensor> down_proj;

    public Block(long dim, long hidden)
        : base(nameof(Block))
    {
        norm = new RmsNorm(dim);
        gate_proj = Linear(dim, hidden, hasBias: false);
        up_proj = Linear(dim, hidden, hasBias: false);
        down_proj = Linear(hidden, dim, hasBias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = norm.call(x);
        var y = down_proj.call(functional.silu(gate_proj.call(h)).mul(up_proj.call(h)));
        return x.add(y).MoveToOuterDisposeScope();
    }
}

/// <summary>Embedding → blocks → norm → head: a small Llama-like language model without attention.</summary>
internal sealed class TinyLm : Module<Tensor, Tensor>
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<Block> layers;
    private readonly RmsNorm norm;
    private readonly Linear lm_head;

    public TinyLm(long vocab, long dim, long hidden, int nLayers)
        : base(nameof(TinyLm))
    {
        embed_tokens = Embedding(vocab, dim);
        layers = new ModuleList<Block>([.. Enumerable.Range(0, nLayers).Select(_ => new Block(dim, hidden))]);
        norm = new RmsNorm(dim);
        lm_head = Linear(dim, vocab, hasBias: false);
        RegisterComponents();
    }

    public IEnumerable<Block> Layers => layers;

    public override Tensor forward(Tensor tokens)
    {
        var x = embed_tokens.call(tokens);
        foreach (var layer in layers)
        {
            x = layer.call(x);
        }

        return lm_head.call(norm.call(x));
    }
}
