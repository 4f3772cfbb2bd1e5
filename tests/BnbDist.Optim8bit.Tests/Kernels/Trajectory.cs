namespace BnbDist.Optim8bit.Tests.Kernels;

/// <summary>Comparisons of replayed optimizer trajectories with bitsandbytes' recorded ones.</summary>
internal static class Trajectory
{
    /// <summary>‖actual − expected‖₂ / ‖expected‖₂, in f64.</summary>
    public static double RelativeL2(float[] actual, float[] expected)
    {
        double diff = 0, norm = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            diff += (double)(actual[i] - expected[i]) * (actual[i] - expected[i]);
            norm += (double)expected[i] * expected[i];
        }

        return Math.Sqrt(diff / norm);
    }
}
