using System.Runtime.InteropServices;

namespace BnbDist.Backends.Interop;

/// <summary>The few cuBLASLt entry points of the int8 GEMM (<c>libcublasLt.so</c>, by P/Invoke).</summary>
/// <remarks>
/// Found through <see cref="PathVariable"/>, the loader's search path (<c>LD_LIBRARY_PATH</c>, or the copy libtorch_cuda
/// already loaded: dlopen of a loaded soname returns it), <c>CUDA_HOME/lib64</c>, or PyTorch's wheel layout
/// (<c>site-packages/nvidia/cublas/lib</c> or <c>nvidia/cu13/lib</c> beside <c>torch/lib</c>). Never loaded on a CPU-only path.
/// </remarks>
public static partial class CublasLt
{
    internal const string Name = "bnbdist_cublaslt";

    /// <summary>Environment variable naming the library file or the folder that holds it.</summary>
    public const string PathVariable = "BNBDIST_CUBLASLT";

    private static readonly string[] Sonames = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"];

    private static readonly Lazy<(IntPtr Handle, string? Path, string? Error)> Loaded = new(Load);

    static CublasLt() => NativeResolver.Register();

    internal static IntPtr Handle => Loaded.Value.Handle;

    /// <summary>Whether cuBLASLt was found and loaded.</summary>
    public static bool IsAvailable => Loaded.Value.Handle != IntPtr.Zero;

    /// <summary>The file (or soname) that was loaded, when available.</summary>
    public static string? LoadedPath => Loaded.Value.Path;

    /// <summary>Why cuBLASLt is not available (each candidate tried), or null.</summary>
    public static string? LoadError => Loaded.Value.Error;

    /// <summary>Where cuBLASLt is looked for, in order.</summary>
    public static IReadOnlyList<string> Candidates()
    {
        var list = new List<string>();
        if (Environment.GetEnvironmentVariable(PathVariable) is { Length: > 0 } v)
        {
            list.AddRange(Directory.Exists(v) ? Sonames.Select(s => Path.Combine(v, s)) : [v]);
        }

        list.AddRange(Sonames);
        if (Environment.GetEnvironmentVariable("CUDA_HOME") is { Length: > 0 } home)
        {
            list.AddRange(Sonames.Select(s => Path.Combine(home, "lib64", s)));
        }

        foreach (var lib in TorchRuntime.LoadedNativeLibraries())
        {
            if (Path.GetDirectoryName(lib) is { } torchLib && Path.GetFileName(torchLib) == "lib")
            {
                foreach (var sub in new[] { Path.Combine("cublas", "lib"), Path.Combine("cu13", "lib") })
                {
                    list.AddRange(Sonames.Select(s => Path.GetFullPath(Path.Combine(torchLib, "..", "..", "nvidia", sub, s))));
                }
            }
        }

        return [.. list.Distinct()];
    }

    private static (IntPtr, string?, string?) Load()
    {
        var tried = new List<string>();
        foreach (var file in Candidates())
        {
            var isPath = file.Contains('/', StringComparison.Ordinal);
            if (isPath && !File.Exists(file))
            {
                tried.Add($"{file} (not found)");
                continue;
            }

            if (!NativeLibrary.TryLoad(file, out var handle))
            {
                tried.Add(isPath ? $"{file} (dlopen failed)" : $"{file} (not on the loader's search path)");
                continue;
            }

            if (!NativeLibrary.TryGetExport(handle, "cublasLtMatmul", out _))
            {
                tried.Add($"{file} (no cublasLtMatmul export)");
                continue;
            }

            return (handle, file, null);
        }

        return (IntPtr.Zero, null,
            $"libcublasLt was not found. Tried: {string.Join("; ", tried)}. Set {PathVariable} to the file or its folder, or put " +
            "PyTorch's nvidia/cublas/lib folder on LD_LIBRARY_PATH.");
    }

    /// <summary>CUBLAS_STATUS_NOT_SUPPORTED.</summary>
    internal const int StatusNotSupported = 15;

    /// <summary>CUBLAS_COMPUTE_32I.</summary>
    internal const int Compute32I = 72;

    /// <summary>cudaDataType CUDA_R_8I.</summary>
    internal const int DataR8I = 3;

    /// <summary>cudaDataType CUDA_R_32I.</summary>
    internal const int DataR32I = 10;

    /// <summary>CUBLASLT_MATMUL_DESC_TRANSA.</summary>
    internal const int DescTransA = 3;

    /// <summary>CUBLAS_OP_T.</summary>
    internal const int OpT = 1;

    /// <summary>The cuBLAS name of a status code.</summary>
    public static string StatusName(int status) => status switch
    {
        0 => "CUBLAS_STATUS_SUCCESS",
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR",
        _ => $"cublasStatus {status}",
    };

    /// <summary>Throws <see cref="CudaException"/> naming the call and the cuBLAS status unless it is success.</summary>
    internal static void Check(int status, string what)
    {
        if (status != 0)
        {
            throw new CudaException(status, $"{what} failed: {StatusName(status)}");
        }
    }

    [LibraryImport(Name)]
    internal static partial int cublasLtCreate(out IntPtr handle);

    [LibraryImport(Name)]
    internal static partial int cublasLtMatmulDescCreate(out IntPtr desc, int computeType, int scaleType);

    [LibraryImport(Name)]
    internal static partial int cublasLtMatmulDescDestroy(IntPtr desc);

    [LibraryImport(Name)]
    internal static unsafe partial int cublasLtMatmulDescSetAttribute(IntPtr desc, int attribute, void* buf, nuint size);

    [LibraryImport(Name)]
    internal static partial int cublasLtMatrixLayoutCreate(out IntPtr layout, int type, ulong rows, ulong cols, long ld);

    [LibraryImport(Name)]
    internal static partial int cublasLtMatrixLayoutDestroy(IntPtr layout);

    [LibraryImport(Name)]
    internal static unsafe partial int cublasLtMatmul(IntPtr handle, IntPtr desc, void* alpha, void* A, IntPtr aDesc, void* B,
        IntPtr bDesc, void* beta, void* C, IntPtr cDesc, void* D, IntPtr dDesc, void* algo, void* workspace, nuint workspaceSize,
        IntPtr stream);
}
