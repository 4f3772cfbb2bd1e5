namespace BnbDist.Examples.Llama.Corpora.RData;

/// <summary>
/// A value read from R's serialization format (what <c>saveRDS</c> and lazy-load databases hold). Only the types that
/// data packages use are modelled: NULL, symbols, pairlists, logical/integer/double/character vectors and lists.
/// </summary>
public abstract class RObject
{
    /// <summary>The object's attributes (a pairlist of tag → value), or null.</summary>
    public RPairList? Attributes { get; internal set; }

    /// <summary>The <c>names</c> attribute as strings, or null when absent.</summary>
    public IReadOnlyList<string?>? Names => Attribute("names") is RStringVector names ? names.Values : null;

    /// <summary>The attribute with tag <paramref name="name"/>, or null.</summary>
    public RObject? Attribute(string name) =>
        Attributes?.Items.FirstOrDefault(i => i.Tag is RSymbol s && s.Name == name).Value;
}

/// <summary>R's NULL.</summary>
public sealed class RNull : RObject
{
    /// <summary>The single NULL value.</summary>
    public static RNull Instance { get; } = new();

    private RNull()
    {
    }
}

/// <summary>An R symbol (SYMSXP), e.g. an attribute tag such as <c>names</c>.</summary>
/// <param name="name">The symbol's print name.</param>
public sealed class RSymbol(string name) : RObject
{
    /// <summary>The symbol's print name.</summary>
    public string Name { get; } = name;
}

/// <summary>A pairlist (LISTSXP): tagged cells, used for attributes.</summary>
/// <param name="items">The cells in order.</param>
public sealed class RPairList(IReadOnlyList<(RObject? Tag, RObject Value)> items) : RObject
{
    /// <summary>The cells in order.</summary>
    public IReadOnlyList<(RObject? Tag, RObject Value)> Items { get; } = items;
}

/// <summary>A character vector (STRSXP); NA elements are null.</summary>
/// <param name="values">The elements.</param>
public sealed class RStringVector(string?[] values) : RObject
{
    /// <summary>The elements (null = NA).</summary>
    public IReadOnlyList<string?> Values { get; } = values;
}

/// <summary>An integer (INTSXP) or logical (LGLSXP) vector; NA is <see cref="int.MinValue"/>, as in R.</summary>
/// <param name="values">The elements.</param>
/// <param name="isLogical">Whether R typed it as logical.</param>
public sealed class RIntVector(int[] values, bool isLogical) : RObject
{
    /// <summary>The elements.</summary>
    public IReadOnlyList<int> Values { get; } = values;

    /// <summary>Whether R typed it as logical (TRUE = 1, FALSE = 0).</summary>
    public bool IsLogical { get; } = isLogical;
}

/// <summary>A double vector (REALSXP).</summary>
/// <param name="values">The elements.</param>
public sealed class RDoubleVector(double[] values) : RObject
{
    /// <summary>The elements.</summary>
    public IReadOnlyList<double> Values { get; } = values;
}

/// <summary>A generic vector (VECSXP), i.e. an R list.</summary>
/// <param name="values">The elements.</param>
public sealed class RList(RObject[] values) : RObject
{
    /// <summary>The elements.</summary>
    public IReadOnlyList<RObject> Values { get; } = values;

    /// <summary>The element named <paramref name="name"/>, or null.</summary>
    public RObject? this[string name]
    {
        get
        {
            var names = Names;
            if (names is null)
            {
                return null;
            }

            for (var i = 0; i < names.Count && i < Values.Count; i++)
            {
                if (names[i] == name)
                {
                    return Values[i];
                }
            }

            return null;
        }
    }
}
