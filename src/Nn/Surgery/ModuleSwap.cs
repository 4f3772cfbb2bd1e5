using System.Collections;
using System.Reflection;
using static TorchSharp.torch;
using Module = TorchSharp.torch.nn.Module;

namespace BnbDist.Nn.Surgery;

/// <summary>Replaces a child module in place: in the parent's registry and in whatever field or list its forward uses.</summary>
/// <remarks>
/// TorchSharp keeps children twice: in the module registry (state_dict, parameters, .to()) and in the C# fields or
/// lists that <c>forward</c> reads. Both must change, or the model would train one layer and save another.
/// </remarks>
public static class ModuleSwap
{
    /// <summary>Swaps <paramref name="parent"/>'s child <paramref name="name"/> for <paramref name="replacement"/>.</summary>
    /// <exception cref="InvalidOperationException">No field or list holds the child, or the field's type cannot hold the replacement.</exception>
    public static void Replace(Module parent, string name, Module replacement)
    {
        ArgumentNullException.ThrowIfNull(parent);
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(replacement);
        var old = parent.named_children().Where(c => c.name == name).Select(c => c.module).FirstOrDefault()
            ?? throw new InvalidOperationException($"{parent.GetName()} has no child named '{name}'.");

        if (!ReplaceReferences(parent, old, replacement))
        {
            throw new InvalidOperationException(
                $"Could not find where {parent.GetType().Name} keeps its child '{name}' (a field or list holding it).");
        }

        parent.register_module(name, null!);
        parent.register_module(name, replacement);
    }

    /// <summary>Every module below <paramref name="root"/> with its dotted name and parent, parents before children.</summary>
    public static IEnumerable<(string Name, Module Parent, string ChildName, Module Module)> Walk(Module root, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(root);
        foreach (var (childName, child) in root.named_children().ToList())
        {
            var full = prefix.Length == 0 ? childName : prefix + "." + childName;
            yield return (full, root, childName, child);
            foreach (var nested in Walk(child, full))
            {
                yield return nested;
            }
        }
    }

    private static bool ReplaceReferences(object owner, Module old, Module replacement)
    {
        var found = false;
        for (var type = owner.GetType(); type is not null && type != typeof(object); type = type.BaseType)
        {
            foreach (var field in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                var value = field.GetValue(owner);
                if (ReferenceEquals(value, old))
                {
                    if (!field.FieldType.IsInstanceOfType(replacement))
                    {
                        throw new InvalidOperationException(
                            $"{owner.GetType().Name}.{field.Name} is declared as {field.FieldType.Name}, which cannot hold a {replacement.GetType().Name}. " +
                            "Declare layers you want to quantize or adapt as Module<Tensor, Tensor>.");
                    }

                    field.SetValue(owner, replacement);
                    found = true;
                }
                else if (value is IList list && value is not Tensor)
                {
                    for (var i = 0; i < list.Count; i++)
                    {
                        if (ReferenceEquals(list[i], old))
                        {
                            list[i] = replacement; // throws ArgumentException if the element type cannot hold it
                            found = true;
                        }
                    }
                }
            }
        }

        return found;
    }
}
