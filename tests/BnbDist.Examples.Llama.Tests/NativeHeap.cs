using System.Runtime.InteropServices;

namespace BnbDist.Examples.Llama.Tests;

/// <summary>
/// Bytes the process's C heap (glibc malloc) has handed out and not yet freed: libtorch's CPU tensors live there, so this
/// is the CPU counterpart of <c>torch.cuda.memory_allocated</c>. Null where the C library is not glibc ≥ 2.33.
/// </summary>
internal static partial class NativeHeap
{
    public static long? AllocatedBytes()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        try
        {
            var info = MallInfo2();
            return (long)(info.Uordblks + info.Hblkhd);
        }
        catch (EntryPointNotFoundException)
        {
            return null;
        }
        catch (DllNotFoundException)
        {
            return null;
        }
    }

    [LibraryImport("libc.so.6", EntryPoint = "mallinfo2")]
    private static partial MallInfo MallInfo2();

    /// <summary>glibc's <c>struct mallinfo2</c> (all size_t).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo
    {
        public nuint Arena;
        public nuint Ordblks;
        public nuint Smblks;
        public nuint Hblks;
        public nuint Hblkhd;
        public nuint Usmblks;
        public nuint Fsmblks;
        public nuint Uordblks;
        public nuint Fordblks;
        public nuint Keepcost;
    }
}
