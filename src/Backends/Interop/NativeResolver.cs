using System.Reflection;
using System.Runtime.InteropServices;

namespace BnbDist.Backends.Interop;

/// <summary>Resolves the logical library names this assembly imports to real files.</summary>
/// <remarks>
/// The CUDA runtime has a versioned soname, and the kernel library lives in the app folder, a folder named by
/// <c>BNBDIST_KERNELS_PATH</c>, or the repository's native build folder; one resolver handles all three so that
/// every P/Invoke in this assembly sees the same choice.
/// </remarks>
internal static class NativeResolver
{
    private static int registered;

    public static void Register()
    {
        if (Interlocked.Exchange(ref registered, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(NativeResolver).Assembly, Resolve);
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        switch (name)
        {
            case CudaRuntime.CudartName:
                return CudaRuntime.ResolveCudart(assembly);
            case CudaRuntime.DriverName:
                return NativeLibrary.TryLoad("libcuda.so.1", out var h) ? h : IntPtr.Zero;
            case KernelLibrary.Name:
                return KernelLibrary.Handle;
            case CublasLt.Name:
                return CublasLt.Handle;
            default:
                return IntPtr.Zero;
        }
    }
}
