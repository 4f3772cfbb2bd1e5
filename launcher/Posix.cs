using System.Runtime.InteropServices;

namespace BnbDist.Launcher;

/// <summary>Signals to worker processes (Process.Kill only sends SIGKILL; workers deserve a SIGTERM first).</summary>
internal static partial class Posix
{
    public const int SIGTERM = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int sig);

    public static void Terminate(int pid)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        _ = Kill(pid, SIGTERM);
    }
}
