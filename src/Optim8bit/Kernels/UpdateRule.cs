namespace BnbDist.Optim8bit.Kernels;

/// <summary>The update rules of bitsandbytes' optimizers (its kernel names: adam, momentum, lion, rmsprop).</summary>
internal enum UpdateRule
{
    /// <summary>Adam/AdamW, 2 states: m = m·β1 + (1−β1)·g, v = v·β2 + (1−β2)·g²; decoupled weight decay after the step.</summary>
    Adam,

    /// <summary>SGD with momentum: s = g at step 1, else s·β1 + g; p −= lr·s (weight decay coupled).</summary>
    Momentum,

    /// <summary>Lion: p·(1 − lr·wd), then p −= lr·sign(s·β1 + (1−β1)·g); s = s·β2 + (1−β2)·g.</summary>
    Lion,

    /// <summary>RMSprop: s = s·α + (1−α)·g²; p −= lr·g/(√s + ε) (weight decay coupled).</summary>
    RmsProp,
}

/// <summary>Facts about an update rule that the optimizer and the backends share.</summary>
internal static class UpdateRules
{
    /// <summary>Whether the rule keeps a second state (Adam's v).</summary>
    public static bool HasState2(this UpdateRule rule) => rule == UpdateRule.Adam;

    /// <summary>bitsandbytes' kernel name for the rule.</summary>
    public static string KernelName(this UpdateRule rule) => rule switch
    {
        UpdateRule.Adam => "adam",
        UpdateRule.Momentum => "momentum",
        UpdateRule.Lion => "lion",
        _ => "rmsprop",
    };
}
