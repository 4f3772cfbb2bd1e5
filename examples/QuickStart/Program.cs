// The README's quick start. Run: dotnet run --project examples/QuickStart [-- cuda]
using BnbDist;
using BnbDist.Backends.Interop;
using static TorchSharp.torch;

TorchRuntime.PreloadFromEnvironment();
var device = args.Length > 0 && args[0] == "cuda" ? CUDA : CPU;

var w = randn(4096, 4096, dtype: ScalarType.BFloat16, device: device);

// 4-bit NF4 with double quantization (bitsandbytes' quantize_4bit(..., compress_statistics=True))
var (packed, state) = Functional.QuantizeNF4(w, blocksize: 64, compressStatistics: true);
Tensor back = Functional.Dequantize4Bit(packed, state);               // bf16, shape [4096, 4096]

// bitsandbytes' serialized keys: absmax, quant_map, nested_absmax, nested_quant_map, quant_state.bitsandbytes__nf4
Dictionary<string, Tensor> sd = state.ToDictionary();
var again = QuantState.FromDictionary(sd, device);

// Blockwise 8-bit with the dynamic map (quantize_blockwise / dequantize_blockwise)
var (q8, s8) = Functional.QuantizeBlockwise(w, blocksize: 256);
var w8 = Functional.DequantizeBlockwise(q8, s8);

// LLM.int8 row-wise quantization with outlier columns (int8_vectorwise_quant)
var (qi8, rowStats, outlierCols) = Functional.Int8VectorwiseQuant(w.to_type(ScalarType.Float16), threshold: 6f);

// safetensors (strict reader, atomic writer)
var path = Path.Combine(Path.GetTempPath(), "w.safetensors");
BnbDist.Serialization.SafeTensorsFile.Save(path, sd);

double RelErr(Tensor a) => ((a.to_type(ScalarType.Float32) - w.to_type(ScalarType.Float32)).norm() / w.to_type(ScalarType.Float32).norm()).item<float>();
Console.WriteLine($"device {device}: NF4+DQ relative error {RelErr(back):F4}, 8-bit {RelErr(w8):F4}; " +
                  $"reloaded state nested={again.Nested}; int8 outlier columns: {outlierCols!.numel()}; saved {sd.Count} tensors to {path}");
