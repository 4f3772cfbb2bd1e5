using System.Diagnostics;
using BnbDist.Backends.Interop;
using TorchSharp;

namespace BnbDist.Bench;

/// <summary>Warm-up, then the median of repeated timings: CUDA events on the GPU, a stopwatch on the CPU.</summary>
internal sealed class Timing(torch.Device device, int warmup, int repeats) : IDisposable
{
    private readonly CudaEventTimer? events = device.type == DeviceType.CUDA ? new CudaEventTimer() : null;

    public int Repeats => repeats;

    /// <summary>Runs <paramref name="run"/> (given the repetition index, to rotate inputs) and returns sorted times in ms.</summary>
    public double[] Measure(Action<int> run)
    {
        for (var i = 0; i < warmup; i++)
        {
            run(i);
        }

        Sync();
        var times = new double[repeats];
        for (var i = 0; i < repeats; i++)
        {
            var k = i;
            if (events is not null)
            {
                times[i] = events.Time(() => run(k));
            }
            else
            {
                var sw = Stopwatch.StartNew();
                run(k);
                times[i] = sw.Elapsed.TotalMilliseconds;
            }
        }

        Array.Sort(times);
        return times;
    }

    /// <summary>
    /// As <see cref="Measure"/>, but each sample times <paramref name="batch"/> back-to-back calls and reports the time per call:
    /// the device's view of a loop of small ops, where the host enqueues the next call while the device runs the previous one.
    /// </summary>
    public double[] MeasureBatched(Action<int> run, int batch)
    {
        var calls = 0;
        var times = Measure(_ =>
        {
            for (var j = 0; j < batch; j++)
            {
                run(calls++);
            }
        });
        return [.. times.Select(t => t / batch)];
    }

    public void Sync()
    {
        if (device.type == DeviceType.CUDA)
        {
            torch.cuda.synchronize(device);
        }
    }

    public void Dispose() => events?.Dispose();

    public static double Median(double[] sorted) =>
        sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
}
