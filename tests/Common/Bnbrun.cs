using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace BnbDist.Tests;

/// <summary>Runs the built bnbrun (dotnet bnbrun.dll) against the built test worker.</summary>
internal static partial class Bnbrun
{
    private static readonly string Configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name; // bin/<cfg>/net10.0

    public static string Worker => Built("tests/Workers/CollectiveWorker", "CollectiveWorker.dll");

    public static string LauncherPath => Built("launcher", "bnbrun.dll");

    public static (int ExitCode, string Output) Run(string[] args)
    {
        using var p = Start(args);
        if (!p.Process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Process.Kill(true);
            throw new TimeoutException("bnbrun did not finish: " + p.Output);
        }

        p.Process.WaitForExit();
        return (p.Process.ExitCode, p.Output);
    }

    public static Running Start(string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(LauncherPath);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return new Running(Process.Start(psi)!);
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int sig);

    public static void Sigterm(int pid) => _ = Kill(pid, 15);

    public static void Signal(int pid, int signal) => _ = Kill(pid, signal);

    public static bool IsAlive(int pid)
    {
        try
        {
            using var proc = Process.GetProcessById(pid);
            return !proc.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    public static string CheckWorker => Built("tests/Workers/CollectiveCheckWorker", "CollectiveCheckWorker.dll");

    /// <summary>The path of <paramref name="file"/> as built from <paramref name="project"/> (a repo-relative folder) in this configuration.</summary>
    public static string Built(string project, string file)
    {
        // A packed GPU run (bench/gpu/pack.sh) puts every assembly in one folder beside the tests.
        if (File.Exists(Path.Combine(AppContext.BaseDirectory, file)))
        {
            return Path.Combine(AppContext.BaseDirectory, file);
        }

        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, project, "bin", Configuration, "net10.0", file);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException($"{file} not built (expected under {project}/bin/{Configuration}/net10.0).");
    }

    internal sealed class Running : IDisposable
    {
        private readonly StringBuilder output = new();

        public Running(Process process)
        {
            Process = process;
            process.OutputDataReceived += (_, e) => Append(e.Data);
            process.ErrorDataReceived += (_, e) => Append(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public string Output
        {
            get
            {
                lock (output)
                {
                    return output.ToString();
                }
            }
        }

        public int WaitForLine(Regex pattern, TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (DateTime.UtcNow < deadline)
            {
                var m = pattern.Match(Output);
                if (m.Success)
                {
                    return int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                }

                Thread.Sleep(50);
            }

            throw new TimeoutException($"no line matching {pattern} in: {Output}");
        }

        /// <summary>The launcher's child processes (its workers), from /proc.</summary>
        public List<int> WorkerPids() =>
            [.. Directory.GetDirectories("/proc").Select(d => int.TryParse(Path.GetFileName(d), out var pid) ? pid : -1)
                .Where(pid => pid > 0 && ParentOf(pid) == Process.Id)];

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                Process.Kill(true);
            }

            Process.Dispose();
        }

        private static int ParentOf(int pid)
        {
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var afterName = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                return int.Parse(afterName[1], System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                return -1;
            }
        }

        private void Append(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(line);
            }
        }
    }
}
