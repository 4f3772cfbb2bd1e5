using System.Runtime.InteropServices;

namespace BnbDist.Backends.Interop;

/// <summary>Locates and binds BnbDist's CUDA kernel library (<c>libbnbdist_kernels.so</c>, built from native/kernels).</summary>
public static partial class KernelLibrary
{
    internal const string Name = "bnbdist_kernels";

    /// <summary>The ABI version this assembly was written against (BNBD_ABI_VERSION in bnbdist_kernels.h).</summary>
    public const int AbiVersion = 3;

    /// <summary>File name of the library.</summary>
    public const string FileName = "libbnbdist_kernels.so";

    /// <summary>Environment variable naming the library file or the folder that holds it.</summary>
    public const string PathVariable = "BNBDIST_KERNELS_PATH";

    private static readonly Lazy<(IntPtr Handle, string? Path, string? Error)> Loaded = new(Load);

    static KernelLibrary() => NativeResolver.Register();

    internal static IntPtr Handle => Loaded.Value.Handle;

    /// <summary>Whether the kernel library was found, loaded and has the expected ABI version.</summary>
    public static bool IsAvailable => Loaded.Value.Handle != IntPtr.Zero;

    /// <summary>The file that was loaded, when available.</summary>
    public static string? LoadedPath => Loaded.Value.Path;

    /// <summary>Why the library is not available (which paths were tried and how to build it), or null.</summary>
    public static string? LoadError => Loaded.Value.Error;

    /// <summary>Folders searched for the library, in order.</summary>
    public static IReadOnlyList<string> SearchPaths()
    {
        var list = new List<string>();
        var env = Environment.GetEnvironmentVariable(PathVariable);
        if (!string.IsNullOrEmpty(env))
        {
            list.Add(env);
        }

        var baseDir = AppContext.BaseDirectory;
        list.Add(Path.Combine(baseDir, FileName));
        list.Add(Path.Combine(baseDir, "runtimes", "linux-x64", "native", FileName));

        // A checkout: walk up from the app folder to the repository's native build output.
        for (var dir = new DirectoryInfo(baseDir); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "native", "kernels", "build", FileName);
            if (File.Exists(candidate))
            {
                list.Add(candidate);
                break;
            }
        }

        return list;
    }

    private static (IntPtr, string?, string?) Load()
    {
        var tried = new List<string>();
        foreach (var entry in SearchPaths())
        {
            var file = Directory.Exists(entry) ? Path.Combine(entry, FileName) : entry;
            if (!File.Exists(file))
            {
                tried.Add($"{file} (not found)");
                continue;
            }

            if (!NativeLibrary.TryLoad(file, out var handle))
            {
                tried.Add($"{file} (dlopen failed: is the CUDA driver installed?)");
                continue;
            }

            if (!NativeLibrary.TryGetExport(handle, "bnbd_abi_version", out var fn))
            {
                tried.Add($"{file} (no bnbd_abi_version export)");
                continue;
            }

            int version;
            unsafe
            {
                version = ((delegate* unmanaged<int>)fn)();
            }

            if (version != AbiVersion)
            {
                tried.Add($"{file} (ABI version {version}, expected {AbiVersion}: rebuild native/kernels)");
                continue;
            }

            return (handle, file, null);
        }

        var message = $"{FileName} was not found or could not be loaded. Tried: {string.Join("; ", tried)}. " +
                      $"Build it on a CUDA machine with `native/kernels/build.sh` (needs nvcc), then put it next to " +
                      $"the application or set {PathVariable} to the file or its folder.";
        return (IntPtr.Zero, null, message);
    }

    [LibraryImport(Name)]
    internal static partial IntPtr bnbd_error_string(int code);

    [LibraryImport(Name)]
    internal static unsafe partial int bnbd_quantize_blockwise(int dtype, float* code, void* A, float* subOffset,
        float* absmax, byte* output, long n, int blocksize, IntPtr stream);

    [LibraryImport(Name)]
    internal static unsafe partial int bnbd_dequantize_blockwise(int dtype, float* code, byte* A, float* absmax,
        void* output, long n, int blocksize, IntPtr stream);

    [LibraryImport(Name)]
    internal static unsafe partial int bnbd_quantize_4bit(int dtype, int quantType, void* A, float* absmax,
        byte* output, long n, int blocksize, IntPtr stream);

    [LibraryImport(Name)]
    internal static unsafe partial int bnbd_dequantize_4bit(int dtype, int quantType, byte* A, float* absmax,
        byte* qabsmax, float* nestedAbsmax, float* nestedCode, float* offset, int nestedBlocksize, void* output,
        long n, int blocksize, IntPtr stream);

    [LibraryImport(Name)]
    internal static unsafe partial int bnbd_gemv_4bit(int dtype, int quantType, void* x, byte* W, float* absmax,
        byte* qabsmax, float* nestedAbsmax, float* nestedCode, float* offset, int nestedBlocksize, void* y, long rows,
        long k, int blocksize, IntPtr stream);

    [LibraryImport(Name)]
    internal static partial long bnbd_mean_workspace_bytes(long n);

    [LibraryImport(Name)]
    internal static unsafe partial int bnbd_mean_f32(float* x, long n, float* output, void* workspace, IntPtr stream);

    [LibraryImport(Name)]
    internal static unsafe partial int bnbd_int8_vectorwise_quant(int dtype, void* A, sbyte* output, float* rowStats,
        long rows, long cols, float threshold, IntPtr stream);

    /// <summary>Turns a kernel return code into a <see cref="CudaException"/>.</summary>
    internal static void Check(int code, string op)
    {
        if (code != 0)
        {
            var text = Marshal.PtrToStringAnsi(bnbd_error_string(code)) ?? "unknown";
            throw new CudaException(code, $"{op} failed in {FileName}: error {code} ({text})");
        }
    }
}
