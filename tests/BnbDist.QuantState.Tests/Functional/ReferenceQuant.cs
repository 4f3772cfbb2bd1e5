using BnbDist.Backends;
using BnbDist.Backends.Cpu;

namespace BnbDist.Tests;

/// <summary>A deliberately plain implementation of the numerical contract, to check the fast backends against.</summary>
public static class ReferenceQuant
{
    public static (byte[] Codes, float[] Absmax) Blockwise8(float[] x, float[] code, int bs)
    {
        var mids = new float[255];
        for (var j = 0; j < 255; j++)
        {
            mids[j] = (code[j] + code[j + 1]) * 0.5f;
        }

        var blocks = (x.Length + bs - 1) / bs;
        var absmax = new float[blocks];
        var codes = new byte[x.Length];
        for (var b = 0; b < blocks; b++)
        {
            var m = 0f;
            for (var i = b * bs; i < Math.Min(x.Length, (b + 1) * bs); i++)
            {
                if (MathF.Abs(x[i]) > m)
                {
                    m = MathF.Abs(x[i]);
                }
            }

            absmax[b] = m;
            var inv = 1f / m;
            for (var i = b * bs; i < Math.Min(x.Length, (b + 1) * bs); i++)
            {
                codes[i] = (byte)CodeSearch.ReferenceIndex(x[i] * inv, mids);
            }
        }

        return (codes, absmax);
    }

    public static (byte[] Packed, float[] Absmax) FourBit(float[] x, QuantType type, int bs)
    {
        var (_, absmax) = Blockwise8(x, CodeBooks.CreateDynamicMap(), bs);
        var packed = new byte[(x.Length + 1) / 2];
        for (var i = 0; i < x.Length; i++)
        {
            var c = FourBitTables.Encode(x[i] * (1f / absmax[i / bs]), type);
            packed[i / 2] |= (byte)(i % 2 == 0 ? c << 4 : c);
        }

        if (x.Length % 2 == 1)
        {
            packed[^1] |= FourBitTables.Encode(0f, type);
        }

        return (packed, absmax);
    }
}
