using BnbDist.Backends.Cpu;
using BnbDist.Backends.Cuda;
using BnbDist.Backends.Interop;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace BnbDist.Backends;

/// <summary>
/// Picks the backend for a tensor's device: ops run where their tensors are. The first use of each backend is
/// logged once, with the reason it serves (or why it cannot).
/// </summary>
public static class QuantBackends
{
    private static readonly CpuQuantBackend CpuBackend = new();
    private static readonly CudaQuantBackend CudaBackend = new();
    private static int cpuLogged;
    private static int cudaLogged;

    /// <summary>Where backend-selection messages go; set it once at start-up (defaults to no logging).</summary>
    public static ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>The CPU backend (always available).</summary>
    public static IQuantBackend Cpu => CpuBackend;

    /// <summary>The backend serving tensors of <paramref name="device"/>.</summary>
    /// <exception cref="InvalidOperationException">CUDA tensors while the kernel library is missing (the message says how to build it).</exception>
    /// <exception cref="NotSupportedException">A device type with no backend.</exception>
    public static IQuantBackend For(torch.Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        switch (device.type)
        {
            case DeviceType.CPU:
                if (Interlocked.Exchange(ref cpuLogged, 1) == 0)
                {
                    Logger.LogInformation("BnbDist quantization backend for CPU tensors: cpu (managed C#, SIMD, {Threads} threads).",
                        Environment.ProcessorCount);
                }

                return CpuBackend;
            case DeviceType.CUDA:
                if (!KernelLibrary.IsAvailable)
                {
                    throw new InvalidOperationException(
                        $"Tensors on {device} need BnbDist's CUDA kernels, which are not available: {KernelLibrary.LoadError}");
                }

                if (Interlocked.Exchange(ref cudaLogged, 1) == 0)
                {
                    Logger.LogInformation("BnbDist quantization backend for CUDA tensors: cuda (kernels from {Path}).",
                        KernelLibrary.LoadedPath);
                }

                return CudaBackend;
            default:
                throw new NotSupportedException($"BnbDist has no quantization backend for {device.type} tensors (only CPU and CUDA).");
        }
    }
}
