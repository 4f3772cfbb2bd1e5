using System.Globalization;

namespace BnbDist.Serialization;

/// <summary>Python's <c>repr(float)</c>, which <c>json.dumps</c> uses: shortest round-trip digits in Python's layout.</summary>
internal static class PythonFloat
{
    public static string Repr(double value)
    {
        if (double.IsNaN(value))
        {
            return "NaN";
        }

        if (double.IsInfinity(value))
        {
            return value > 0 ? "Infinity" : "-Infinity";
        }

        if (value == 0)
        {
            return double.IsNegative(value) ? "-0.0" : "0.0";
        }

        // "E16" gives the shortest round-trip digits as d.ddddE±x; re-lay them as Python does.
        var r = value.ToString("R", CultureInfo.InvariantCulture);
        var negative = r.StartsWith('-');
        if (negative)
        {
            r = r[1..];
        }

        string mantissa;
        int exp;
        var e = r.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            mantissa = r[..e];
            exp = int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
        }
        else
        {
            mantissa = r;
            exp = 0;
        }

        // Normalize to digits and a decimal exponent: value = 0.d1d2d3... × 10^pointPos.
        var dot = mantissa.IndexOf('.');
        var intPart = dot >= 0 ? mantissa[..dot] : mantissa;
        var fracPart = dot >= 0 ? mantissa[(dot + 1)..] : string.Empty;
        var digits = (intPart + fracPart).TrimStart('0');
        var leadingZeros = (intPart + fracPart).Length - digits.Length;
        var pointPos = intPart.Length + exp - leadingZeros;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0)
        {
            digits = "0";
        }

        var decExp = pointPos - 1; // exponent in d.ddd×10^decExp form
        string body;
        if (decExp < -4 || decExp >= 16)
        {
            var m = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
            body = m + "e" + (decExp < 0 ? "-" : "+") + Math.Abs(decExp).ToString("00", CultureInfo.InvariantCulture);
        }
        else if (pointPos <= 0)
        {
            body = "0." + new string('0', -pointPos) + digits;
        }
        else if (pointPos >= digits.Length)
        {
            body = digits + new string('0', pointPos - digits.Length) + ".0";
        }
        else
        {
            body = digits[..pointPos] + "." + digits[pointPos..];
        }

        return negative ? "-" + body : body;
    }
}
