using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Bench;

/// <summary>The device's copy bandwidth measured in the same run: a large buffer copy, counting bytes read + written.</summary>
internal static class CopyBandwidth
{
    public static double Measure(Device device, Timing timing, long bytes)
    {
        var n = bytes / 4;
        using var src0 = randn(n, device: device);
        using var src1 = randn(n, device: device);
        using var dst = empty(n, device: device);
        var torchCopy = timing.Measure(i => dst.copy_(i % 2 == 0 ? src0 : src1));
        var best = 2.0 * bytes / (Timing.Median(torchCopy) * 1e-3) / 1e9;
        if (device.type == DeviceType.CPU)
        {
            // Also a plain parallel memcpy, in case libtorch's copy is not the fastest way to move memory here.
            var plain = timing.Measure(i => ParallelCopy(i % 2 == 0 ? src0 : src1, dst, bytes));
            best = Math.Max(best, 2.0 * bytes / (Timing.Median(plain) * 1e-3) / 1e9);
        }

        return best;
    }

    private static unsafe void ParallelCopy(Tensor src, Tensor dst, long bytes)
    {
        var s = (byte*)BnbDist.Backends.Interop.TensorMemory.DataPointer(src);
        var d = (byte*)BnbDist.Backends.Interop.TensorMemory.DataPointer(dst);
        var parts = Environment.ProcessorCount;
        var chunk = (bytes + parts - 1) / parts;
        Parallel.For(0, parts, p =>
        {
            var start = p * chunk;
            var len = Math.Min(chunk, bytes - start);
            if (len > 0)
            {
                NativeMemory.Copy(s + start, d + start, (nuint)len);
            }
        });
        GC.KeepAlive(src);
        GC.KeepAlive(dst);
    }
}
