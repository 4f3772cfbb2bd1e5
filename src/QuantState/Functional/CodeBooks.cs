using BnbDist.Backends;
using static TorchSharp.torch;

namespace BnbDist;

/// <summary>The code books of bitsandbytes: 8-bit dynamic maps and the NF4/FP4 tables (bitsandbytes' <c>create_dynamic_map</c>, <c>get_4bit_type</c>).</summary>
public static class CodeBooks
{
    // A plain dictionary under a lock: ConcurrentDictionary's update path calls Tensor.Equals, which is element-wise.
    private static readonly Dictionary<(string Name, string Device), Tensor> Cache = [];

    /// <summary>
    /// bitsandbytes' <c>create_dynamic_map(signed, max_exponent_bits, total_bits)</c> as 256 ascending f32 values.
    /// </summary>
    /// <remarks>
    /// torch's float32 <c>linspace</c> rounds each element once (it is compiled with FMA contraction), which is
    /// emulated with <see cref="MathF.FusedMultiplyAdd"/>; the plain two-rounding form differs in up to 56 entries.
    /// </remarks>
    public static float[] CreateDynamicMap(bool signed = true, int maxExponentBits = 7, int totalBits = 8)
    {
        if (totalBits is < 2 or > 8)
        {
            throw new ArgumentOutOfRangeException(nameof(totalBits), totalBits, "totalBits must be 2..8.");
        }

        if (maxExponentBits < 1 || maxExponentBits > totalBits - 1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxExponentBits), maxExponentBits, "maxExponentBits must be 1..totalBits-1.");
        }

        var data = new List<float>(256);
        var nonSignBits = totalBits - 1;
        var additionalItems = (1 << (nonSignBits - maxExponentBits)) - 1;
        for (var i = 0; i < maxExponentBits; i++)
        {
            var fractionItems = signed
                ? (1 << (i + nonSignBits - maxExponentBits)) + 1
                : (1 << (i + nonSignBits - maxExponentBits + 1)) + 1;
            AddScaledMeans(data, Linspace(0.1f, 1f, fractionItems), (float)Math.Pow(10, -(maxExponentBits - 1) + i), signed);
        }

        if (additionalItems > 0)
        {
            // bitsandbytes reuses the loop's last exponent here, so these items are scaled by 10^0.
            AddScaledMeans(data, Linspace(0.1f, 1f, additionalItems + 1), 1f, signed);
        }

        data.Add(0f);
        data.Add(1f);
        while (data.Count < 256)
        {
            data.Add(0f);
        }

        data.Sort();
        return [.. data];
    }

    /// <summary>The signed (or unsigned) 8-bit dynamic map as a new f32[256] tensor on <paramref name="device"/> (yours to keep or dispose).</summary>
    public static Tensor DynamicMap(bool signed = true, Device? device = null) => SharedDynamicMap(signed, device ?? CPU).clone();

    /// <summary>The 16-entry code book of a 4-bit type (what bitsandbytes saves as <c>quant_map</c>) as a new tensor on <paramref name="device"/>.</summary>
    public static Tensor FourBit(QuantType quantType, Device? device = null) => SharedFourBit(quantType, device ?? CPU).clone();

    /// <summary>
    /// The cached dynamic map on a device, shared by every QuantState that uses it (as bitsandbytes shares its
    /// name2qmap tensors), so a quantization call launches no copy kernel.
    /// </summary>
    internal static Tensor SharedDynamicMap(bool signed, Device device) =>
        Cached(signed ? "dynamic_signed" : "dynamic_unsigned", device, () => CreateDynamicMap(signed));

    /// <summary>The cached 4-bit code book on a device (see <see cref="SharedDynamicMap"/>).</summary>
    internal static Tensor SharedFourBit(QuantType quantType, Device device) =>
        Cached(quantType == QuantType.NF4 ? "nf4" : "fp4", device, () => FourBitTables.CodeBook(quantType).ToArray());

    private static Tensor Cached(string name, Device device, Func<float[]> make)
    {
        // Detached from any DisposeScope (the first caller may be inside one). Should a caller dispose a shared tensor
        // anyway (say, a state's Code), the cache notices and makes a new one instead of handing out a dead handle.
        var key = (name, device.ToString());
        lock (Cache)
        {
            if (!Cache.TryGetValue(key, out var t) || t.IsInvalid)
            {
                using var host = tensor(make(), ScalarType.Float32);
                t = host.to(device).DetachFromDisposeScope();
                Cache[key] = t;
            }

            return t;
        }
    }

    private static void AddScaledMeans(List<float> data, float[] boundaries, float scale, bool signed)
    {
        for (var k = 0; k + 1 < boundaries.Length; k++)
        {
            var mean = (boundaries[k] + boundaries[k + 1]) / 2f;
            data.Add(scale * mean);
            if (signed)
            {
                data.Add(-scale * mean);
            }
        }
    }

    /// <summary>torch.linspace(start, end, steps) in float32, bit for bit (single-rounding FMA form).</summary>
    internal static float[] Linspace(float start, float end, int steps)
    {
        var result = new float[steps];
        if (steps == 1)
        {
            result[0] = start;
            return result;
        }

        var step = (end - start) / (steps - 1);
        var halfway = steps / 2;
        for (var i = 0; i < steps; i++)
        {
            result[i] = i < halfway
                ? MathF.FusedMultiplyAdd(step, i, start)
                : MathF.FusedMultiplyAdd(-step, steps - 1 - i, end);
        }

        return result;
    }
}
