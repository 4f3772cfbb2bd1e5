using System.Globalization;
using System.IO.Hashing;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>The checksum of checkpoint files and tensor slices: XXH3 64-bit (fast enough to hash while writing), as 16 hex digits.</summary>
internal static class Checksum
{
    public const string Algorithm = "xxh3-64";

    public static XxHash3 Create() => new();

    public static string Format(XxHash3 hash) => hash.GetCurrentHashAsUInt64().ToString("x16", CultureInfo.InvariantCulture);
}
