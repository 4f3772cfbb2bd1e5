using System.Reflection;
using System.Runtime.InteropServices;
using BnbDist.Backends.Interop;

namespace BnbDist.Collectives.Nccl;

/// <summary>
/// Locates and binds NCCL (<c>libnccl.so.2</c>). PyTorch's pip wheels ship it in <c>site-packages/nvidia/nccl/lib</c>;
/// the library is found through <see cref="PathVariable"/>, <c>NCCL_LIB_DIR</c>, the loader's search path
/// (<c>LD_LIBRARY_PATH</c>, or the copy libtorch_cuda already loaded), or beside the loaded libtorch.
/// </summary>
public static partial class NcclLibrary
{
    internal const string Name = "bnbdist_nccl";

    /// <summary>File name (soname) of the library.</summary>
    public const string FileName = "libnccl.so.2";

    /// <summary>Environment variable naming the library file or the folder that holds it.</summary>
    public const string PathVariable = "BNBDIST_NCCL";

    /// <summary>Oldest NCCL accepted: 2.10 added bf16 and ncclAvg.</summary>
    public const int MinVersion = 21000;

    private static readonly Lazy<LoadResult> Loaded = new(() => Load(Candidates()));

    static NcclLibrary() => NativeLibrary.SetDllImportResolver(typeof(NcclLibrary).Assembly, Resolve);

    /// <summary>Whether NCCL was found, loaded and is new enough.</summary>
    public static bool IsAvailable => Loaded.Value.Handle != IntPtr.Zero;

    /// <summary>The file that was loaded, when available.</summary>
    public static string? LoadedPath => Loaded.Value.Path;

    /// <summary>NCCL's version code (e.g. 22809 for 2.28.9), when available.</summary>
    public static int Version => Loaded.Value.Version;

    /// <summary>Why NCCL is not available (each path tried and what was wrong), or null.</summary>
    public static string? LoadError => Loaded.Value.Error;

    /// <summary>A version code as "major.minor.patch" (codes from 2.9 on are major*10000 + minor*100 + patch).</summary>
    public static string FormatVersion(int code) => code >= 10000
        ? $"{code / 10000}.{code / 100 % 100}.{code % 100}"
        : $"{code / 1000}.{code / 100 % 10}.{code % 100}";

    /// <summary>Throws with <see cref="LoadError"/> unless NCCL is available.</summary>
    /// <exception cref="CollectiveException">NCCL is missing or too old (the message says what was tried and what to set).</exception>
    public static void EnsureAvailable()
    {
        if (!IsAvailable)
        {
            throw new CollectiveException($"the NCCL backend is not available: {LoadError}");
        }
    }

    /// <summary>Where NCCL is looked for, in order.</summary>
    public static IReadOnlyList<string> Candidates()
    {
        var list = new List<string>();
        foreach (var variable in new[] { PathVariable, "NCCL_LIB_DIR" })
        {
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } v)
            {
                list.Add(Directory.Exists(v) ? Path.Combine(v, FileName) : v);
            }
        }

        list.Add(FileName);

        // PyTorch's wheel layout: site-packages/torch/lib next to site-packages/nvidia/nccl/lib.
        foreach (var lib in TorchRuntime.LoadedNativeLibraries())
        {
            if (Path.GetDirectoryName(lib) is { } torchLib && Path.GetFileName(torchLib) == "lib")
            {
                var candidate = Path.GetFullPath(Path.Combine(torchLib, "..", "..", "nvidia", "nccl", "lib", FileName));
                if (!list.Contains(candidate))
                {
                    list.Add(candidate);
                }
            }
        }

        return list;
    }

    /// <summary>Loads the first candidate that is a usable NCCL (testable with any list of paths).</summary>
    internal static LoadResult Load(IEnumerable<string> candidates)
    {
        var tried = new List<string>();
        foreach (var file in candidates)
        {
            var isPath = file.Contains('/', StringComparison.Ordinal);
            if (isPath && !File.Exists(file))
            {
                tried.Add($"{file} (not found)");
                continue;
            }

            if (!NativeLibrary.TryLoad(file, out var handle))
            {
                tried.Add(isPath ? $"{file} (dlopen failed: not a loadable library)" : $"{file} (not on the loader's search path)");
                continue;
            }

            if (!NativeLibrary.TryGetExport(handle, "ncclGetVersion", out var fn))
            {
                tried.Add($"{file} (no ncclGetVersion export: not NCCL)");
                continue;
            }

            int version, rc;
            unsafe
            {
                rc = ((delegate* unmanaged<int*, int>)fn)(&version);
            }

            if (rc != 0)
            {
                tried.Add($"{file} (ncclGetVersion failed with {rc})");
                continue;
            }

            if (version < MinVersion)
            {
                tried.Add($"{file} (NCCL {FormatVersion(version)} is older than {FormatVersion(MinVersion)}, which BnbDist needs for bf16 and average reductions)");
                continue;
            }

            return new LoadResult(handle, file, version, null);
        }

        var message = $"{FileName} was not found or is unusable. Tried: {string.Join("; ", tried)}. PyTorch's pip wheels ship it in " +
                      $"site-packages/nvidia/nccl/lib: set {PathVariable} to that file or folder, or put the folder on LD_LIBRARY_PATH.";
        return new LoadResult(IntPtr.Zero, null, 0, message);
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name == Name ? Loaded.Value.Handle : IntPtr.Zero;

    internal sealed record LoadResult(IntPtr Handle, string? Path, int Version, string? Error);
}
