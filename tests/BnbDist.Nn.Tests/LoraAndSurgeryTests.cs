using BnbDist.Nn.Lora;
using BnbDist.Nn.Surgery;
using BnbDist.Serialization;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Nn.Tests;

/// <summary>A tiny two-block model whose layers are declared swappable (Module&lt;Tensor, Tensor&gt;), as users would.</summary>
internal sealed class TinyModel : Module<Tensor, Tensor>
{
    private readonly Module<Tensor, Tensor> q_proj;
    private readonly Module<Tensor, Tensor> v_proj;
    private readonly ModuleList<Module<Tensor, Tensor>> mlp;
    private readonly Module<Tensor, Tensor> lm_head;

    public TinyModel(int dim = 64, int outDim = 16)
        : base(nameof(TinyModel))
    {
        q_proj = Linear(dim, dim);
        v_proj = Linear(dim, dim);
        mlp = new ModuleList<Module<Tensor, Tensor>>(Linear(dim, 2 * dim), Linear(2 * dim, dim));
        lm_head = Linear(dim, outDim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var h = functional.relu(q_proj.call(x)) + v_proj.call(x);
        h = mlp[1].call(functional.relu(mlp[0].call(h)));
        return lm_head.call(h);
    }
}

/// <summary>LoRA adapters and model surgery: exact gradients, QLoRA training, peft files, merge, typed errors.</summary>
public class LoraAndSurgeryTests
{
    [Fact]
    public void QuantizeLinearsSwapsEveryLinearExceptTheSkippedHead()
    {
        manual_seed(1);
        var model = new TinyModel();
        using var x = randn(5, 64);
        using var before = model.forward(x);
        var replaced = ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { ComputeDType = ScalarType.Float32 });
        Assert.Equal(["q_proj", "v_proj", "mlp.0", "mlp.1"], replaced);
        Assert.Contains(model.named_modules(), m => m.name == "lm_head" && m.module is Linear);
        Assert.Equal(4, model.named_modules().Count(m => m.module is Linear4bit));

        // Forward now uses the 4-bit layers (the fields were swapped too), and the result is close to the original.
        using var after = model.forward(x);
        var rel = ((after - before).norm() / before.norm()).item<float>();
        Assert.True(rel is > 0 and < 0.2f, $"relative change {rel}");
        Assert.Contains(model.state_dict().Keys, k => k == "q_proj.weight.quant_state.bitsandbytes__nf4");
    }

    [Fact]
    public void LoraStartsAsTheBaseLayerAndGivesExactGradientsForAAndB()
    {
        manual_seed(2);
        var baseLayer = new Linear4bit(32, 24, true, ScalarType.Float32, true, QuantType.NF4);
        var lora = new LoraLinear(baseLayer, r: 4, alpha: 8);
        using var x = randn(7, 32);
        Assert.True(lora.forward(x).equal(baseLayer.forward(x)).all().item<bool>());

        using (no_grad())
        {
            lora.LoraB.normal_();
        }

        using var r = randn(7, 24);
        (lora.forward(x) * r).sum().backward();
        // y = base + s·x·Aᵀ·Bᵀ: dL/dB = s·rᵀ·(x·Aᵀ), dL/dA = s·Bᵀ·rᵀ·x.
        using var x64 = x.to_type(ScalarType.Float64);
        using var r64 = r.to_type(ScalarType.Float64);
        using var a64 = lora.LoraA.detach().to_type(ScalarType.Float64);
        using var b64 = lora.LoraB.detach().to_type(ScalarType.Float64);
        using var gb = r64.t().matmul(x64.matmul(a64.t())) * lora.Scaling;
        using var ga = b64.t().matmul(r64.t()).matmul(x64) * lora.Scaling;
        Assert.True(RelErr(lora.LoraB.grad!, gb) < 1e-6);
        Assert.True(RelErr(lora.LoraA.grad!, ga) < 1e-6);
        Assert.Null(baseLayer.Weight.grad);
        Assert.All(baseLayer.parameters(), p => Assert.False(p.requires_grad));
    }

    [Fact]
    public void QLoraTrainingOnlyTheAdaptersReducesTheLoss()
    {
        manual_seed(3);
        var model = new TinyModel(dim: 32, outDim: 8);
        ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { ComputeDType = ScalarType.Float32 });
        var adapted = ModelSurgery.AddLora(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj", "mlp\\.\\d+"] });
        Assert.Equal(4, adapted.Count);
        foreach (var p in model.named_parameters().Where(p => p.name.StartsWith("lm_head", StringComparison.Ordinal)))
        {
            p.parameter.requires_grad = false;
        }

        foreach (var (_, m) in model.named_modules())
        {
            (m as Linear4bit)?.Quantize();
        }

        var trainable = model.parameters().Where(p => p.requires_grad).ToList();
        Assert.All(model.named_parameters().Where(p => p.parameter.requires_grad), p => Assert.Contains("lora_", p.name, StringComparison.Ordinal));
        var frozenBefore = model.named_parameters().Where(p => p.name.EndsWith("base_layer.weight", StringComparison.Ordinal))
            .Select(p => p.parameter.detach().clone()).ToList();

        using var x = randn(64, 32);
        using var target = randn(64, 8);
        var opt = optim.Adam(trainable, lr: 1e-2);
        var first = 0f;
        var last = 0f;
        for (var step = 0; step < 60; step++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var loss = functional.mse_loss(model.forward(x), target);
            loss.backward();
            opt.step();
            last = loss.item<float>();
            if (step == 0)
            {
                first = last;
            }
        }

        Assert.True(last < 0.8f * first, $"loss {first} -> {last}");
        var frozenAfter = model.named_parameters().Where(p => p.name.EndsWith("base_layer.weight", StringComparison.Ordinal)).Select(p => p.parameter).ToList();
        Assert.All(frozenBefore.Zip(frozenAfter), p => Assert.True(p.First.equal(p.Second).all().item<bool>()));
    }

    [Fact]
    public void AdapterSavedInPeftFormatReloadsToTheSameOutputAndMergesToADenseLayer()
    {
        manual_seed(4);
        var config = new LoraConfig { R = 4, Alpha = 16, TargetModules = ["q_proj", "v_proj"] };
        var model = new TinyModel(dim: 32, outDim: 8);
        var fresh = new TinyModel(dim: 32, outDim: 8);
        fresh.load_state_dict(model.state_dict());
        ModelSurgery.QuantizeLinears(model, new BitsAndBytesConfig { ComputeDType = ScalarType.Float32 });
        ModelSurgery.QuantizeLinears(fresh, new BitsAndBytesConfig { ComputeDType = ScalarType.Float32 });
        ModelSurgery.AddLora(model, config);
        ModelSurgery.AddLora(fresh, config);
        foreach (var (_, layer) in ModelSurgery.Adapters(model))
        {
            using (no_grad())
            {
                layer.LoraB.normal_();
            }
        }

        var dir = Directory.CreateTempSubdirectory("bnbdist-adapter-").FullName;
        try
        {
            ModelSurgery.SaveAdapter(model, dir, config);
            var keys = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")).Names.Order().ToList();
            Assert.Equal(["base_model.model.q_proj.lora_A.weight", "base_model.model.q_proj.lora_B.weight",
                "base_model.model.v_proj.lora_A.weight", "base_model.model.v_proj.lora_B.weight"], keys);
            Assert.Contains("\"lora_alpha\"", File.ReadAllText(Path.Combine(dir, "adapter_config.json")), StringComparison.Ordinal);

            ModelSurgery.LoadAdapter(fresh, dir);
            using var x = randn(3, 32);
            Assert.True(model.forward(x).equal(fresh.forward(x)).all().item<bool>());

            var (_, q) = ModelSurgery.Adapters(model).First();
            var merged = q.Merge();
            Assert.True(merged.forward(x).allclose(q.forward(x), rtol: 1e-4, atol: 1e-5));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void SurgeryErrorsAreClear()
    {
        var model = new TinyModel();
        Assert.Contains("No linear layer matched", Assert.Throws<ArgumentException>(() =>
            ModelSurgery.AddLora(model, new LoraConfig { TargetModules = ["nope"] })).Message, StringComparison.Ordinal);
        var sealedField = new SealedFieldModel();
        var ex = Assert.Throws<InvalidOperationException>(() => ModelSurgery.QuantizeLinears(sealedField, new BitsAndBytesConfig { SkipModules = [] }));
        Assert.Contains("Module<Tensor, Tensor>", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraLinear(Linear(4, 4), r: 0));
    }

    private sealed class SealedFieldModel : Module<Tensor, Tensor>
    {
        private readonly Linear proj = Linear(4, 4);

        public SealedFieldModel()
            : base(nameof(SealedFieldModel)) => RegisterComponents();

        public override Tensor forward(Tensor x) => proj.call(x);
    }

    private static double RelErr(Tensor actual, Tensor expected)
    {
        using var a = actual.to_type(ScalarType.Float64);
        return ((a - expected).norm() / expected.norm()).item<double>();
    }
}
