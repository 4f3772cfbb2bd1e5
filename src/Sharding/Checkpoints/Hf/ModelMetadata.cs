using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using BnbDist.Nn.Lora;
using BnbDist.Serialization;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>One LoRA layer's settings (peft's <c>r</c>, <c>lora_alpha</c>, <c>lora_dropout</c>).</summary>
/// <param name="R">Rank.</param>
/// <param name="Alpha">Alpha (scaling = alpha / r).</param>
/// <param name="Dropout">Dropout probability on the adapter input.</param>
public sealed record LoraMetadata(int R, double Alpha, double Dropout);

/// <summary>
/// What a sharded checkpoint needs, beyond its tensors, to be turned into a Hugging Face model without the model
/// object: the dtype of every float parameter (shards are f32 masters) and the LoRA layers with their settings.
/// Saved as the replicated u8 JSON tensor <see cref="TensorName"/> (see <see cref="FsdpModule.ReplicatedState"/>).
/// </summary>
public sealed record ModelMetadata
{
    /// <summary>Name of the replicated tensor holding the metadata.</summary>
    public const string TensorName = "fsdp.model_metadata";

    /// <summary>The <see cref="Format"/> value.</summary>
    public const string FormatName = "bnbdist.fsdp-model/1";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Always <see cref="FormatName"/>.</summary>
    public required string Format { get; init; }

    /// <summary>Every float parameter's sharded name and its module dtype (safetensors name: "F32", "BF16", ...).</summary>
    public required SortedDictionary<string, string> Params { get; init; }

    /// <summary>Every LoRA layer by module path (its base layer's tensors are under <c>{path}.base_layer.</c>).</summary>
    public required SortedDictionary<string, LoraMetadata> Lora { get; init; }

    /// <summary>The metadata of a sharded model (identical on every rank).</summary>
    internal static ModelMetadata Of(FsdpModule root)
    {
        var lora = root.Module.named_modules().Where(m => m.module is LoraLinear)
            .ToDictionary(m => m.name, m => (LoraLinear)m.module);
        return new ModelMetadata
        {
            Format = FormatName,
            Params = new(root.FloatSlots().ToDictionary(s => s.Name, s => SafeTensorsFile.DTypeString(s.DType)), StringComparer.Ordinal),
            Lora = new(lora.ToDictionary(kv => kv.Key, kv => new LoraMetadata(kv.Value.Rank, kv.Value.Alpha, kv.Value.DropoutProbability)), StringComparer.Ordinal),
        };
    }

    /// <summary>The metadata as UTF-8 JSON (stored as a u8 tensor).</summary>
    public byte[] ToBytes() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    /// <summary>Parses the metadata tensor's bytes; malformed ones are a <see cref="CheckpointException"/> (BadIndex) naming <paramref name="file"/>.</summary>
    public static ModelMetadata Parse(byte[] value, string file)
    {
        ArgumentNullException.ThrowIfNull(value);
        CheckpointException Bad(string problem, Exception? inner = null) => new(CheckpointError.BadIndex, file, TensorName, problem, inner);
        ModelMetadata? m;
        try
        {
            m = JsonSerializer.Deserialize<ModelMetadata>(value, Json);
        }
        catch (JsonException ex)
        {
            throw Bad($"not valid metadata JSON: {ex.Message}", ex);
        }

        if (m is null || m.Format != FormatName || m.Params is null || m.Lora is null)
        {
            throw Bad($"not {FormatName} metadata: {Encoding.UTF8.GetString(value)}");
        }

        return m;
    }
}
