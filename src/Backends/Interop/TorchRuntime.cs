using System.Runtime.InteropServices;
using TorchSharp;

namespace BnbDist.Backends.Interop;

/// <summary>Where TorchSharp's native libraries came from, and how to point it at a user's own libtorch.</summary>
/// <remarks>
/// On a CUDA machine BnbDist uses the libtorch of the user's PyTorch install (TorchSharp's CUDA packages are not
/// required): put its <c>torch/lib</c> folder on <c>LD_LIBRARY_PATH</c>, or name it in <see cref="LibTorchVariable"/>,
/// which is loaded before TorchSharp initializes.
/// </remarks>
public static class TorchRuntime
{
    /// <summary>Environment variable naming a libtorch folder (e.g. <c>python -c "import torch,os;print(os.path.dirname(torch.__file__))"</c>/lib).</summary>
    public const string LibTorchVariable = "BNBDIST_LIBTORCH";

    private static int preloaded;

    /// <summary>
    /// Loads libtorch from <see cref="LibTorchVariable"/> when set (CUDA build first, then CPU) so TorchSharp binds to it.
    /// Call before the first TorchSharp call. Returns what was loaded, or null when the variable is unset.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The variable names a folder without libtorch.</exception>
    public static string? PreloadFromEnvironment()
    {
        var dir = Environment.GetEnvironmentVariable(LibTorchVariable);
        if (string.IsNullOrEmpty(dir) || Interlocked.Exchange(ref preloaded, 1) == 1)
        {
            return null;
        }

        if (!Directory.Exists(dir))
        {
            throw new DirectoryNotFoundException($"{LibTorchVariable}={dir} is not a folder; set it to PyTorch's torch/lib folder.");
        }

        foreach (var lib in new[] { "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so" })
        {
            var path = Path.Combine(dir, lib);
            if (File.Exists(path))
            {
                NativeLibrary.Load(path);
            }
        }

        return File.Exists(Path.Combine(dir, "libtorch_cpu.so"))
            ? dir
            : throw new DirectoryNotFoundException($"{LibTorchVariable}={dir} holds no libtorch_cpu.so; set it to PyTorch's torch/lib folder.");
    }

    /// <summary>Paths of the loaded libtorch / TorchSharp native libraries (from /proc/self/maps; empty elsewhere).</summary>
    public static IReadOnlyList<string> LoadedNativeLibraries()
    {
        const string maps = "/proc/self/maps";
        if (!File.Exists(maps))
        {
            return [];
        }

        return [.. File.ReadLines(maps)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(p => p.Length >= 6)
            .Select(p => p[^1])
            .Where(p => Path.GetFileName(p) is var f && (f.StartsWith("libtorch", StringComparison.Ordinal) ||
                f.StartsWith("libc10", StringComparison.Ordinal) || f.StartsWith("libLibTorchSharp", StringComparison.Ordinal)))
            .Distinct()];
    }

    /// <summary>Whether TorchSharp can reach CUDA, and if not, what to set.</summary>
    public static (bool Available, string Detail) CudaStatus()
    {
        if (torch.cuda.is_available())
        {
            return (true, $"{torch.cuda.device_count()} device(s)");
        }

        var libs = LoadedNativeLibraries();
        var cudaLoaded = libs.Any(l => l.Contains("libtorch_cuda", StringComparison.Ordinal));
        return (false, cudaLoaded
            ? "libtorch_cuda is loaded but reports no usable GPU (driver missing or no device visible)."
            : $"no CUDA build of libtorch was found. Put your PyTorch's torch/lib folder on LD_LIBRARY_PATH or set {LibTorchVariable} to it.");
    }
}
