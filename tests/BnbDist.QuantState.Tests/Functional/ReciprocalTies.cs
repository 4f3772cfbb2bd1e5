namespace BnbDist.Tests;

/// <summary>
/// bitsandbytes' CUDA kernels normalize with a fast-math reciprocal (up to 1 ulp from IEEE); BnbDist uses the IEEE
/// one on every backend. A code can then differ only where the normalized value sits within an ulp or two of a
/// decision boundary. This helper states that rule exactly: a differing code is accepted only if the reference
/// code is what the same rule gives for a normalized value within <see cref="Ulps"/> ulps of ours.
/// </summary>
public static class ReciprocalTies
{
    public const int Ulps = 4;

    public static bool Explains(float xn, int referenceCode, Func<float, int> encode)
    {
        var up = xn;
        var down = xn;
        for (var i = 0; i < Ulps; i++)
        {
            up = MathF.BitIncrement(up);
            down = MathF.BitDecrement(down);
            if (encode(up) == referenceCode || encode(down) == referenceCode)
            {
                return true;
            }
        }

        return false;
    }
}
