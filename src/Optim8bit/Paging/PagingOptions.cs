namespace BnbDist.Optim8bit;

/// <summary>Where a paged optimizer keeps its states.</summary>
public enum PagedMode
{
    /// <summary>States live in host memory (pinned when the parameter is on CUDA) and are staged to the parameter's device page by page for each step.</summary>
    Paged,

    /// <summary>States stay on the parameter's device (for when device memory is plentiful); the step is the non-paged one.</summary>
    Resident,
}

/// <summary>How a paged optimizer stages its states.</summary>
/// <param name="Mode">Paged (host memory, staged) or resident (on the device).</param>
/// <param name="PageElements">State elements staged per page: a multiple of the 256-element quantization block, so no block spans two pages.</param>
public sealed record PagingOptions(PagedMode Mode = PagedMode.Paged, long PageElements = PagingOptions.DefaultPageElements)
{
    /// <summary>16 Mi elements: 16 MiB of 8-bit state (32 MiB for Adam's two states) per staging buffer set.</summary>
    public const long DefaultPageElements = 16L * 1024 * 1024;

    internal PagingOptions Validated() =>
        PageElements > 0 && PageElements % Kernels.Adam8bitBlockwise.BlockSize == 0
            ? this
            : throw new ArgumentException($"PageElements must be a positive multiple of 256, got {PageElements}.", nameof(PageElements));
}
