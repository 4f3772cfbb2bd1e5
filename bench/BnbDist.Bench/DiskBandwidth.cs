using System.Diagnostics;
using System.Runtime.InteropServices;

namespace BnbDist.Bench;

/// <summary>
/// The disk's raw sequential bandwidth, measured beside the checkpoint figures: one file written in 8 MiB chunks and
/// fsynced, then read back after its pages are dropped from the page cache (so reads come from the disk, as a restart's would).
/// </summary>
internal static partial class DiskBandwidth
{
    private const int Chunk = 8 << 20;

    /// <summary>Seconds to write <paramref name="bytes"/> to <paramref name="path"/> and fsync.</summary>
    public static double Write(string path, long bytes)
    {
        var buffer = new byte[Chunk];
        Random.Shared.NextBytes(buffer);
        var sw = Stopwatch.StartNew();
        using (var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1))
        {
            for (long done = 0; done < bytes; done += Chunk)
            {
                fs.Write(buffer, 0, (int)Math.Min(Chunk, bytes - done));
            }

            fs.Flush(true);
        }

        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Seconds to read <paramref name="path"/> sequentially, cold.</summary>
    public static double Read(string path)
    {
        DropFromPageCache(path);
        var buffer = new byte[Chunk];
        var sw = Stopwatch.StartNew();
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1))
        {
            while (fs.Read(buffer, 0, Chunk) > 0)
            {
            }
        }

        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Evicts a file's (clean) pages from the page cache: posix_fadvise(POSIX_FADV_DONTNEED), after an fsync.</summary>
    public static void DropFromPageCache(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        fs.Flush(true);
        _ = Fadvise((int)fs.SafeFileHandle.DangerousGetHandle(), 0, 0, 4 /* POSIX_FADV_DONTNEED */);
    }

    /// <summary>Drops every file under <paramref name="folder"/> from the page cache.</summary>
    public static void DropFolderFromPageCache(string folder)
    {
        foreach (var f in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories))
        {
            DropFromPageCache(f);
        }
    }

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int Fadvise(int fd, long offset, long length, int advice);
}
