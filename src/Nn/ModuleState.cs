using TorchSharp.Modules;
using static TorchSharp.torch;

namespace BnbDist.Nn;

/// <summary>Helpers for module state that is created lazily (first forward, first move), possibly inside a user's DisposeScope.</summary>
internal static class ModuleState
{
    /// <summary>A parameter that belongs to the module, not to whatever DisposeScope is open right now.</summary>
    public static Parameter Keep(Tensor data, bool requiresGrad)
    {
        data.DetachFromDisposeScope();
        var p = new Parameter(data, requires_grad: requiresGrad);
        p.DetachFromDisposeScope();
        return p;
    }

    /// <summary>A buffer-like tensor kept by the module across scopes.</summary>
    public static Tensor Keep(Tensor t) => t.DetachFromDisposeScope();
}
