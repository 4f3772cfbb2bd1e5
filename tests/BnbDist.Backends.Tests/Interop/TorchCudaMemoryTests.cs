using BnbDist.Backends.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace BnbDist.Backends.Tests.Interop;

/// <summary>The allocator-statistics binding: a clear reason when it cannot work, true figures when it can.</summary>
public sealed class TorchCudaMemoryTests
{
    /// <summary>Without CUDA (or without the library) every call says false and why, naming the library; nothing throws.</summary>
    [Fact]
    public void UnavailableCallsReturnFalseWithAReason()
    {
        Assert.SkipWhen(cuda.is_available() && TorchCudaMemory.IsAvailable, "the library works here; the CUDA test covers it");
        Assert.False(TorchCudaMemory.TryGetStats(0, out var stats, out var reason));
        Assert.Equal(default, stats);
        Assert.Contains(TorchCudaMemory.FileName, reason, StringComparison.Ordinal);
        Assert.False(TorchCudaMemory.TryResetPeakStats(0, out reason));
        Assert.Contains(TorchCudaMemory.FileName, reason, StringComparison.Ordinal);
        Assert.False(TorchCudaMemory.TryEmptyCache(out reason));
        Assert.NotEmpty(reason);
    }

    /// <summary>On a GPU: a 64 MiB tensor raises allocated bytes by 64 MiB and sets a peak that survives its disposal until the reset.</summary>
    [Fact]
    public void StatsFollowAnAllocationOnCuda()
    {
        Assert.SkipUnless(cuda.is_available(), "needs a CUDA GPU (runs on the GPU host)");
        Assert.True(TorchCudaMemory.IsAvailable, TorchCudaMemory.UnavailableReason);
        var device = new Device(DeviceType.CUDA, 0);
        using (var warm = ones(1, device: device))
        {
            Assert.True(TorchCudaMemory.TryGetStats(0, out _, out var r0), r0);
        }

        const long size = 64L << 20;
        Assert.True(TorchCudaMemory.TryResetPeakStats(0, out var reason), reason);
        Assert.True(TorchCudaMemory.TryGetStats(0, out var before, out reason), reason);
        using (var t = empty(size, ScalarType.Byte, device))
        {
            Assert.True(TorchCudaMemory.TryGetStats(0, out var during, out reason), reason);
            Assert.Equal(before.AllocatedBytes + size, during.AllocatedBytes);
            Assert.True(during.ReservedBytes >= during.AllocatedBytes);
        }

        Assert.True(TorchCudaMemory.TryGetStats(0, out var after, out reason), reason);
        Assert.Equal(before.AllocatedBytes, after.AllocatedBytes);
        Assert.True(after.PeakAllocatedBytes >= before.AllocatedBytes + size);
        Assert.True(TorchCudaMemory.TryResetPeakStats(0, out reason), reason);
        Assert.True(TorchCudaMemory.TryGetStats(0, out var reset, out reason), reason);
        Assert.Equal(reset.AllocatedBytes, reset.PeakAllocatedBytes);
        Assert.True(TorchCudaMemory.TryEmptyCache(out reason), reason);
        Assert.True(TorchCudaMemory.TryGetStats(0, out var emptied, out reason), reason);
        Assert.True(emptied.ReservedBytes <= after.ReservedBytes);
    }
}
