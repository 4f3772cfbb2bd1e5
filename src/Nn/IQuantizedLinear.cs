using static TorchSharp.torch;

namespace BnbDist.Nn;

/// <summary>What LoRA, model surgery and checkpoint code need to know about any linear layer (dense or quantized).</summary>
public interface ILinearLayer
{
    /// <summary>Input features.</summary>
    long InFeatures { get; }

    /// <summary>Output features.</summary>
    long OutFeatures { get; }

    /// <summary>The bias, or null.</summary>
    Tensor? Bias { get; }

    /// <summary>A dense [out, in] copy of the weight in <paramref name="dtype"/> (dequantized for quantized layers).</summary>
    Tensor DenseWeight(ScalarType dtype);
}

/// <summary>A layer whose checkpoint form is bitsandbytes' (quantized weight plus its statistics under <c>weight.*</c> keys).</summary>
public interface IQuantizedModule
{
    /// <summary>The layer's entries in bitsandbytes' key scheme, each key prefixed with <paramref name="prefix"/>.</summary>
    Dictionary<string, Tensor> QuantizedStateDict(string prefix = "");

    /// <summary>
    /// Loads the layer's entries (keys starting with <paramref name="prefix"/>) from a bitsandbytes-style state dict.
    /// Missing, extra or mis-shaped entries are a <see cref="StateDictException"/> naming the key.
    /// </summary>
    void LoadQuantizedStateDict(IReadOnlyDictionary<string, Tensor> source, string prefix = "");

    /// <summary>The state-dict keys this layer reads, given its prefix (to detect unexpected keys at model level).</summary>
    IEnumerable<string> ExpectedKeys(string prefix, IReadOnlyDictionary<string, Tensor> source);
}

/// <summary>A state dict that does not fit a module: a missing, unexpected or mis-shaped key, named in <see cref="Key"/>.</summary>
public sealed class StateDictException : Exception
{
    /// <summary>Creates the exception.</summary>
    public StateDictException(string key, string problem, Exception? inner = null)
        : base($"State dict entry '{key}': {problem}", inner) => Key = key;

    /// <summary>Creates the exception.</summary>
    public StateDictException()
        : this("?", "invalid state dict.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public StateDictException(string message)
        : this("?", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public StateDictException(string message, Exception innerException)
        : this("?", message, innerException)
    {
    }

    /// <summary>The offending key.</summary>
    public string Key { get; }
}
