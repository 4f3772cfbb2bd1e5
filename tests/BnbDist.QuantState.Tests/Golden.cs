using BnbDist.Serialization;
using static TorchSharp.torch;

namespace BnbDist.Tests;

/// <summary>
/// The reference outputs of real bitsandbytes 0.50 (../shared/golden/bitsandbytes/golden.safetensors beside the
/// repository, or the file named by BNBDIST_GOLDEN). Missing file = failing test, never a skip: these tests are
/// the proof of bit-compatibility.
/// </summary>
public static class Golden
{
    private static readonly Lazy<SafeTensorsFile> File = new(() => SafeTensorsFile.Open(FindPath()));

    public static SafeTensorsFile Data => File.Value;

    public static Tensor Get(string name) => Data.Read(name);

    public static string FindPath()
    {
        var env = Environment.GetEnvironmentVariable("BNBDIST_GOLDEN");
        if (!string.IsNullOrEmpty(env))
        {
            return env;
        }

        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            foreach (var candidate in new[]
            {
                Path.Combine(dir.FullName, "shared", "golden", "bitsandbytes", "golden.safetensors"),
                Path.Combine(dir.FullName, "..", "shared", "golden", "bitsandbytes", "golden.safetensors"),
            })
            {
                if (System.IO.File.Exists(candidate))
                {
                    return Path.GetFullPath(candidate);
                }
            }
        }

        throw new FileNotFoundException(
            "bitsandbytes golden file not found: expected ../shared/golden/bitsandbytes/golden.safetensors beside the repository, or set BNBDIST_GOLDEN.");
    }

    public static ScalarType DType(string name) => name switch
    {
        "fp32" => ScalarType.Float32,
        "bf16" => ScalarType.BFloat16,
        "fp16" => ScalarType.Float16,
        _ => throw new ArgumentException(name),
    };
}
