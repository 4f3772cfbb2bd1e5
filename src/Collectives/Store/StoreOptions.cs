using System.Net;

namespace BnbDist.Collectives.Store;

/// <summary>Settings of a <see cref="TcpStoreServer"/> and its clients.</summary>
public sealed record StoreOptions
{
    /// <summary>Environment variable holding the shared token (or <c>file:PATH</c> to read it from a file).</summary>
    public const string TokenVariable = "BNBDIST_STORE_TOKEN";

    /// <summary>Address the server binds; loopback unless told otherwise (multi-node needs an external address).</summary>
    public IPAddress BindAddress { get; init; } = IPAddress.Loopback;

    /// <summary>Shared secret every client must present; null = no authentication (single-node default).</summary>
    public string? Token { get; init; }

    /// <summary>Largest frame accepted after authentication.</summary>
    public int MaxMessageBytes { get; init; } = 64 << 20;

    /// <summary>How long a client keeps trying to connect before failing with an error naming the endpoint.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Default timeout of blocking operations (get, wait).</summary>
    public TimeSpan OperationTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>The token from <see cref="TokenVariable"/> (a literal, or <c>file:PATH</c>), or null when unset.</summary>
    public static string? TokenFromEnvironment()
    {
        var v = Environment.GetEnvironmentVariable(TokenVariable);
        if (string.IsNullOrEmpty(v))
        {
            return null;
        }

        return v.StartsWith("file:", StringComparison.Ordinal) ? File.ReadAllText(v[5..]).Trim() : v;
    }
}

/// <summary>A store operation failed: refused, timed out, or the connection broke. The message names the endpoint.</summary>
public sealed class StoreException : Exception
{
    /// <summary>Creates the exception.</summary>
    public StoreException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    /// <summary>Creates the exception.</summary>
    public StoreException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public StoreException(string message)
        : base(message)
    {
    }
}
