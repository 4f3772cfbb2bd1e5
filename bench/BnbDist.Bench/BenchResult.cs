using System.Text.Json;
using System.Text.Json.Nodes;

namespace BnbDist.Bench;

/// <summary>
/// One benchmark row: the median time of an op and its effective bandwidth (bytes read + written); optimizer rows also
/// carry their state bytes per parameter.
/// </summary>
/// <remarks>A row with a <see cref="Unit"/> is a measured quantity (<see cref="Value"/>, e.g. bits per parameter), not a timing.</remarks>
internal sealed record BenchResult(string Name, double MedianMs, double MinMs, double MaxMs, int Repeats, long Bytes, string? Note = null,
    double Value = 0, string? Unit = null, double? StateBytesPerParam = null)
{
    public double GBps => Bytes / (MedianMs * 1e-3) / 1e9;
}

/// <summary>
/// The results file <c>{"device", "copy_gbps", "results": [...]}</c>. Rows of other benchmarks already in the file are
/// kept (later suites add rows to the same file); rows with the same name are replaced.
/// </summary>
internal static class ResultsFile
{
    public static void Write(string path, string device, double copyGBps, IEnumerable<BenchResult> results, IDictionary<string, string> extra)
    {
        var rows = new List<JsonObject>();
        var names = new HashSet<string>(results.Select(r => r.Name));
        var previous = File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) as JsonObject : null;
        if (previous?["results"] is JsonArray oldRows)
        {
            rows.AddRange(oldRows.OfType<JsonObject>().Where(r => !names.Contains((string?)r["name"] ?? string.Empty)).Select(r => (JsonObject)r.DeepClone()));
        }

        foreach (var r in results)
        {
            if (r.Unit is not null)
            {
                rows.Add(new JsonObject { ["name"] = r.Name, ["value"] = r.Value, ["unit"] = r.Unit, ["bytes"] = r.Bytes, ["note"] = r.Note });
                continue;
            }

            var row = new JsonObject
            {
                ["name"] = r.Name,
                ["median_ms"] = Math.Round(r.MedianMs, 5),
                ["gbps"] = Math.Round(r.GBps, 1),
                ["pct_of_copy"] = Math.Round(100 * r.GBps / copyGBps, 1),
                ["min_ms"] = Math.Round(r.MinMs, 5),
                ["max_ms"] = Math.Round(r.MaxMs, 5),
                ["repeats"] = r.Repeats,
                ["bytes"] = r.Bytes,
            };
            if (r.Note is not null)
            {
                row["note"] = r.Note;
            }

            if (r.StateBytesPerParam is { } sb)
            {
                row["state_bytes_per_param"] = Math.Round(sb, 4);
            }

            rows.Add(row);
        }

        // Top-level facts of earlier suites stay; a suite without a copy measurement (copyGBps 0) keeps the earlier one, and
        // commands accumulate so the file says every command that wrote it.
        var doc = new JsonObject();
        foreach (var (k, v) in previous ?? [])
        {
            if (k != "results")
            {
                doc[k] = v?.DeepClone();
            }
        }

        doc["device"] = device;
        if (copyGBps > 0 || doc["copy_gbps"] is null)
        {
            doc["copy_gbps"] = Math.Round(copyGBps, 1);
        }

        doc["measured_at"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture);
        foreach (var (k, v) in extra)
        {
            doc[k] = k == "command" && (string?)doc[k] is { } earlier && earlier != v && !earlier.Contains(v, StringComparison.Ordinal)
                ? JsonValue.Create(earlier + " ; " + v)
                : JsonValue.Create(v);
        }

        doc["results"] = new JsonArray([.. rows]);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
