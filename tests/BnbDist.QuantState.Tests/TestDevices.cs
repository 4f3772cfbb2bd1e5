using BnbDist.Backends.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Tests;

/// <summary>Devices the cross-backend tests run on: CPU always, CUDA where a GPU and the kernel library exist.</summary>
public static class TestDevices
{
    public static bool CudaAvailable => cuda.is_available() && KernelLibrary.IsAvailable;

    public const string NoCudaReason =
        "needs a CUDA GPU and libbnbdist_kernels.so; this machine has none. It runs on the GPU host (bench/gpu-tests.sh), which records its summary in bench/results/.";

    public static Device Cuda => new(DeviceType.CUDA, 0);
}
