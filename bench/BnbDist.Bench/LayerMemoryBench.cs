using BnbDist.Backends.Interop;
using BnbDist.Nn;
using BnbDist.Nn.Lora;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace BnbDist.Bench;

/// <summary>
/// Device memory of one LoRA training step (forward + backward) through one 8192x8192 layer: a QLoRA layer (NF4 Linear4bit with
/// double quant under the adapter) or a bf16 LoRA layer. Run each in its own process (suites <c>mem-qlora</c>, <c>mem-lora</c>).
/// </summary>
/// <remarks>
/// Measured with cudaMemGetInfo: used memory after the step minus used memory before anything of the layer existed (the CUDA
/// context and cuBLAS are initialized first, so neither counts). TorchSharp has no allocator statistics and no empty_cache, so the
/// figure is what libtorch's caching allocator reserved, i.e. at least the peak of live tensors (rounded up to its segments): the
/// weights, the adapter, its gradients and the step's activations. The 4-bit weight is quantized on the CPU and only its packed
/// form moves to the GPU, so no transient full-precision copy is counted.
/// </remarks>
internal static class LayerMemoryBench
{
    private const int Side = 8192;
    private const int Tokens = 2048;
    private const int Rank = 16;

    public static BenchResult Run(Device device, bool quantized)
    {
        using var scope = NewDisposeScope();
        using (var w = randn(256, 256, device: device))
        {
            w.matmul(w).Dispose();
            w.to_type(ScalarType.BFloat16).matmul(w.to_type(ScalarType.BFloat16)).Dispose();
        }

        cuda.synchronize(device);
        var (free0, _) = CudaRuntime.MemoryInfo();

        Module<Tensor, Tensor> baseLayer;
        if (quantized)
        {
            var l = new Linear4bit(Side, Side, hasBias: false, ScalarType.BFloat16, compressStatistics: true, QuantType.NF4);
            l.Quantize();
            baseLayer = l;
        }
        else
        {
            baseLayer = nn.Linear(Side, Side, hasBias: false, dtype: ScalarType.BFloat16);
        }

        using var lora = new LoraLinear(baseLayer, Rank, alpha: 2 * Rank);
        lora.to(device);
        manual_seed(7);
        var x = randn([Tokens, Side], ScalarType.BFloat16, device: device, requires_grad: true);
        var y = lora.forward(x);
        var loss = y.to_type(ScalarType.Float32).square().mean();
        loss.backward();
        cuda.synchronize(device);
        var (free1, _) = CudaRuntime.MemoryInfo();
        var used = (long)(free0 - free1);
        var name = quantized ? "qlora_nf4_layer_8192_fwd_bwd_mib" : "lora_bf16_layer_8192_fwd_bwd_mib";
        var what = quantized ? "LoraLinear(Linear4bit NF4, double quant, bf16 compute)" : "LoraLinear(bf16 nn.Linear)";
        return new BenchResult(name, 0, 0, 0, 1, used,
            $"{what}, r {Rank}, {Tokens} tokens x {Side} bf16 input with requires_grad, one forward + backward; device memory by cudaMemGetInfo " +
            "after minus before (includes the caching allocator's reserve, so >= the peak of live tensors)",
            Value: Math.Round(used / 1048576.0, 1), Unit: "MiB");
    }
}
