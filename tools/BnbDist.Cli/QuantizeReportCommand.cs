using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using BnbDist.Serialization;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Cli;

/// <summary>
/// <c>bnbdist quantize-report FILE.safetensors</c>: quantizes every float tensor of a real checkpoint with 8-bit
/// blockwise, NF4 and FP4 (double quant), dequantizes it back and reports storage and error per tensor.
/// </summary>
internal static class QuantizeReportCommand
{
    private sealed record Method(string Name, Func<Tensor, Tensor> RoundTrip, Func<long, double> BitsPerParam);

    private static readonly Method[] Methods =
    [
        new("8-bit bs256", x =>
        {
            var (q, s) = Functional.QuantizeBlockwise(x, blocksize: 256);
            return Functional.DequantizeBlockwise(q, s);
        }, n => 8.0 + (32.0 * Blocks(n, 256) / n)),
        new("NF4 bs64 dq", x =>
        {
            var (q, s) = Functional.QuantizeNF4(x, 64, compressStatistics: true);
            return Functional.Dequantize4Bit(q, s);
        }, FourBitDqBits),
        new("FP4 bs64 dq", x =>
        {
            var (q, s) = Functional.QuantizeFP4(x, 64, compressStatistics: true);
            return Functional.Dequantize4Bit(q, s);
        }, FourBitDqBits),
    ];

    public static Command Create()
    {
        var file = new Argument<FileInfo>("file") { Description = "A safetensors file (e.g. a model checkpoint)." };
        var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
        var minElements = new Option<long>("--min-elements") { Description = "Skip tensors smaller than this.", DefaultValueFactory = _ => 4096 };
        var limit = new Option<int>("--limit") { Description = "Report at most this many tensors (largest first).", DefaultValueFactory = _ => 12 };
        var match = new Option<string?>("--match") { Description = "Only tensors whose name contains this text." };
        var json = new Option<FileInfo?>("--json") { Description = "Also write the results as JSON to this file." };
        var cmd = new Command("quantize-report", "Quantize every float tensor of a safetensors file (8-bit, NF4, FP4) and report bits/param and error.")
        {
            file, device, minElements, limit, match, json,
        };
        cmd.SetAction(r => Run(r.GetValue(file)!, r.GetValue(device)!, r.GetValue(minElements), r.GetValue(limit), r.GetValue(match), r.GetValue(json)));
        return cmd;
    }

    private static int Run(FileInfo file, string deviceName, long minElements, int limit, string? match, FileInfo? jsonOut)
    {
        SafeTensorsFile st;
        try
        {
            st = SafeTensorsFile.Open(file.FullName);
        }
        catch (Exception ex) when (ex is FormatException or IOException)
        {
            AnsiConsole.MarkupLine($"[red]error:[/] {Markup.Escape(ex.Message)}");
            return 2;
        }

        var device = new Device(deviceName);
        var selected = st.Tensors
            .Where(t => t.DType is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 && t.NumElements >= minElements)
            .Where(t => match is null || t.Name.Contains(match, StringComparison.Ordinal))
            .OrderByDescending(t => t.NumElements).ThenBy(t => t.Name, StringComparer.Ordinal)
            .Take(limit).ToList();
        if (selected.Count == 0)
        {
            AnsiConsole.MarkupLine($"[yellow]No float tensors with at least {minElements} elements in {Markup.Escape(file.FullName)}.[/]");
            return 1;
        }

        var table = new Table().AddColumns("tensor", "shape", "dtype", "method", "bits/param", "rel. L2 error", "mean |err|", "max |err|", "ms");
        var results = new List<Dictionary<string, object>>();
        foreach (var info in selected)
        {
            using var scope = NewDisposeScope();
            var x = st.Read(info.Name).to(device).contiguous();
            using var x64 = x.to_type(ScalarType.Float64);
            var norm = x64.norm().item<double>();
            foreach (var m in Methods)
            {
                var sw = Stopwatch.StartNew();
                var back = m.RoundTrip(x);
                if (device.type == DeviceType.CUDA)
                {
                    cuda.synchronize(device);
                }

                var ms = sw.Elapsed.TotalMilliseconds;
                using var err = (back.to_type(ScalarType.Float64) - x64).abs();
                var rel = norm == 0 ? 0 : err.norm().item<double>() / norm;
                var mean = err.mean().item<double>();
                var max = err.max().item<double>();
                var bits = m.BitsPerParam(info.NumElements);
                table.AddRow(Markup.Escape(info.Name), Markup.Escape($"[{string.Join("x", info.Shape)}]"), info.DType.ToString(), m.Name,
                    $"{bits:F3}", $"{rel:E3}", $"{mean:E3}", $"{max:E3}", $"{ms:F1}");
                results.Add(new()
                {
                    ["tensor"] = info.Name,
                    ["shape"] = info.Shape,
                    ["dtype"] = info.DType.ToString(),
                    ["method"] = m.Name,
                    ["bits_per_param"] = bits,
                    ["rel_l2_error"] = rel,
                    ["mean_abs_error"] = mean,
                    ["max_abs_error"] = max,
                    ["ms"] = ms,
                });
            }
        }

        AnsiConsole.MarkupLine($"Quantization round trip of [bold]{Markup.Escape(file.FullName)}[/] on {device} ({selected.Count} tensors):");
        AnsiConsole.Write(table);
        if (jsonOut is not null)
        {
            File.WriteAllText(jsonOut.FullName, JsonSerializer.Serialize(new { file = file.FullName, device = device.ToString(), results },
                new JsonSerializerOptions { WriteIndented = true }));
            AnsiConsole.MarkupLine($"Wrote {Markup.Escape(jsonOut.FullName)}");
        }

        return 0;
    }

    private static long Blocks(long n, int bs) => (n + bs - 1) / bs;

    // 4 bits per value, an 8-bit absmax code per 64 values, an f32 absmax per 256 blocks, and the f32 offset.
    private static double FourBitDqBits(long n) => 4.0 + (8.0 * Blocks(n, 64) / n) + (32.0 * Blocks(Blocks(n, 64), 256) / n) + (32.0 / n);
}
