using System.Runtime.InteropServices;

namespace BnbDist.Backends.Interop;

/// <summary>PyTorch's CUDA caching-allocator statistics of one device (<c>torch.cuda.memory_stats</c>' aggregate rows).</summary>
/// <param name="AllocatedBytes">Bytes held by live tensors now (<c>memory_allocated</c>).</param>
/// <param name="PeakAllocatedBytes">Highest <paramref name="AllocatedBytes"/> since the last reset (<c>max_memory_allocated</c>).</param>
/// <param name="ReservedBytes">Bytes the allocator holds from CUDA, cache included (<c>memory_reserved</c>).</param>
/// <param name="PeakReservedBytes">Highest <paramref name="ReservedBytes"/> since the last reset (<c>max_memory_reserved</c>).</param>
/// <param name="ActiveBytes">Bytes in active blocks now (allocated, or freed but awaiting stream use).</param>
/// <param name="PeakActiveBytes">Highest <paramref name="ActiveBytes"/> since the last reset.</param>
public readonly record struct TorchCudaMemoryStats(long AllocatedBytes, long PeakAllocatedBytes, long ReservedBytes, long PeakReservedBytes,
    long ActiveBytes, long PeakActiveBytes);

/// <summary>
/// <c>torch.cuda.memory_stats</c>, <c>reset_peak_memory_stats</c> and <c>empty_cache</c> for TorchSharp processes, which
/// lack them: bound to <c>libbnbdist_torch_memory.so</c>, a small C++ library that <c>native/kernels/build.sh</c> builds
/// against the host's PyTorch when it finds one. Every call reports failure with a reason instead of throwing, since
/// memory figures are optional.
/// </summary>
public static class TorchCudaMemory
{
    /// <summary>File name of the library.</summary>
    public const string FileName = "libbnbdist_torch_memory.so";

    /// <summary>Environment variable naming the library file or the folder that holds it.</summary>
    public const string PathVariable = "BNBDIST_TORCH_MEMORY_PATH";

    /// <summary>ABI version of the library this class binds (bnbd_torch_memory_abi_version).</summary>
    public const int AbiVersion = 1;

    private static readonly Lazy<Binding> Bound = new(Bind);

    /// <summary>Whether the library was found and bound.</summary>
    public static bool IsAvailable => Bound.Value.Error is null;

    /// <summary>Why the library is unavailable (paths tried, how to build it), or null.</summary>
    public static string? UnavailableReason => Bound.Value.Error;

    /// <summary>The loaded file, when available.</summary>
    public static string? LoadedPath => Bound.Value.Path;

    /// <summary>The allocator statistics of CUDA device <paramref name="device"/>.</summary>
    /// <returns>False with <paramref name="reason"/> when the library is missing or torch reports an error.</returns>
    public static unsafe bool TryGetStats(int device, out TorchCudaMemoryStats stats, out string reason)
    {
        stats = default;
        var b = Bound.Value;
        if (b.Error is not null)
        {
            reason = b.Error;
            return false;
        }

        var values = stackalloc long[6];
        if (!Ok(((delegate* unmanaged<int, long*, int>)b.Stats)(device, values), b, out reason))
        {
            return false;
        }

        stats = new TorchCudaMemoryStats(values[0], values[1], values[2], values[3], values[4], values[5]);
        return true;
    }

    /// <summary>Resets the peaks of device <paramref name="device"/> to the current values.</summary>
    public static unsafe bool TryResetPeakStats(int device, out string reason)
    {
        var b = Bound.Value;
        if (b.Error is not null)
        {
            reason = b.Error;
            return false;
        }

        return Ok(((delegate* unmanaged<int, int>)b.ResetPeak)(device), b, out reason);
    }

    /// <summary>Returns the allocator's unused cached blocks to CUDA (<c>torch.cuda.empty_cache</c>).</summary>
    public static unsafe bool TryEmptyCache(out string reason)
    {
        var b = Bound.Value;
        if (b.Error is not null)
        {
            reason = b.Error;
            return false;
        }

        return Ok(((delegate* unmanaged<int>)b.EmptyCache)(), b, out reason);
    }

    /// <summary>Files tried, in order: <see cref="PathVariable"/>, the app folder, the kernel library's folder, a checkout's native/kernels/build.</summary>
    public static IReadOnlyList<string> SearchPaths()
    {
        var list = new List<string>();
        if (Environment.GetEnvironmentVariable(PathVariable) is { Length: > 0 } env)
        {
            list.Add(Directory.Exists(env) ? Path.Combine(env, FileName) : env);
        }

        list.Add(Path.Combine(AppContext.BaseDirectory, FileName));
        if (Environment.GetEnvironmentVariable(KernelLibrary.PathVariable) is { Length: > 0 } kernels)
        {
            var dir = Directory.Exists(kernels) ? kernels : Path.GetDirectoryName(kernels);
            if (!string.IsNullOrEmpty(dir))
            {
                list.Add(Path.Combine(dir, FileName));
            }
        }

        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "native", "kernels", "build", FileName);
                if (File.Exists(candidate))
                {
                    list.Add(candidate);
                    break;
                }
            }
        }

        return [.. list.Distinct()];
    }

    private static unsafe bool Ok(int code, Binding b, out string reason)
    {
        if (code == 0)
        {
            reason = string.Empty;
            return true;
        }

        reason = $"{FileName}: {Marshal.PtrToStringUTF8(((delegate* unmanaged<IntPtr>)b.LastError)()) ?? "unknown error"}";
        return false;
    }

    private static unsafe Binding Bind()
    {
        var tried = new List<string>();
        foreach (var file in SearchPaths())
        {
            if (!File.Exists(file))
            {
                tried.Add($"{file} (not found)");
                continue;
            }

            // Needs torch's libc10_cuda.so, which a TorchSharp process on CUDA has loaded from torch/lib already.
            if (!NativeLibrary.TryLoad(file, out var h))
            {
                tried.Add($"{file} (dlopen failed: is torch/lib on LD_LIBRARY_PATH?)");
                continue;
            }

            if (!NativeLibrary.TryGetExport(h, "bnbd_torch_memory_abi_version", out var version) ||
                ((delegate* unmanaged<int>)version)() != AbiVersion ||
                !NativeLibrary.TryGetExport(h, "bnbd_torch_cuda_memory_stats", out var stats) ||
                !NativeLibrary.TryGetExport(h, "bnbd_torch_cuda_reset_peak_memory_stats", out var reset) ||
                !NativeLibrary.TryGetExport(h, "bnbd_torch_cuda_empty_cache", out var empty) ||
                !NativeLibrary.TryGetExport(h, "bnbd_torch_last_error", out var error))
            {
                tried.Add($"{file} (missing exports or ABI version other than {AbiVersion}: rebuild with native/kernels/build.sh)");
                continue;
            }

            return new Binding(file, null, stats, reset, empty, error);
        }

        return new Binding(null, $"{FileName} is unavailable, so PyTorch's allocator statistics cannot be read. Tried: {string.Join("; ", tried)}. " +
            $"native/kernels/build.sh builds it on a machine whose python3 imports torch; put it next to the application or set {PathVariable}.",
            IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero);
    }

    private sealed record Binding(string? Path, string? Error, IntPtr Stats, IntPtr ResetPeak, IntPtr EmptyCache, IntPtr LastError);
}
