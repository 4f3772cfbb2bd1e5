using System.Runtime.InteropServices;
using System.Text;

namespace BnbDist.Sharding.Checkpoints;

/// <summary>
/// Crash-safe file replacement: write a temporary file, fsync it, rename it over the target, fsync the folder (so the
/// rename itself survives a power loss). A reader sees the old file or the new one, never a torn one.
/// </summary>
internal static partial class DurableFiles
{
    /// <summary>Replaces <paramref name="path"/> with <paramref name="text"/> (UTF-8) atomically.</summary>
    public static void WriteAllText(string path, string text, string stage)
    {
        var tmp = CheckpointPaths.TempPath(path);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                fs.Write(Encoding.UTF8.GetBytes(text));
                fs.Flush(true);
            }

            CheckpointFaults.Stage(stage + ":written");
            Commit(tmp, path);
            CheckpointFaults.Stage(stage + ":renamed");
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    /// <summary>Renames a finished (fsynced) temporary file into place and fsyncs the folder.</summary>
    public static void Commit(string tmp, string path)
    {
        File.Move(tmp, path, overwrite: true);
        SyncFolder(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>fsyncs a folder, making renames and deletions in it durable (best effort off Linux).</summary>
    public static void SyncFolder(string folder)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var fd = Open(folder, 0 /* O_RDONLY */);
        if (fd < 0)
        {
            return;
        }

        _ = Fsync(fd);
        _ = Close(fd);
    }

    public static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // A leftover temporary file is ignored by readers and removed by the next save of that step.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
