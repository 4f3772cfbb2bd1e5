using System.Diagnostics;
using System.Text;

namespace BnbDist.Sharding.Tests.Checkpoints;

/// <summary>Runs the built checkpoint worker and bnbrun (referenced by this project, so built alongside) as real processes.</summary>
internal static class BuiltPrograms
{
    private static readonly string Configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;

    public static string Worker => Find("tests/Workers/CheckpointWorker", "CheckpointWorker.dll");

    public static string Bnbrun => Find("launcher", "bnbrun.dll");

    /// <summary>Runs <c>dotnet DLL ARGS</c> to completion (3 minutes at most) and returns its exit code and output.</summary>
    public static (int ExitCode, string Output) Run(string dll, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var output = new StringBuilder();
        p.OutputDataReceived += (_, e) => Append(output, e.Data);
        p.ErrorDataReceived += (_, e) => Append(output, e.Data);
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Kill(true);
            throw new TimeoutException($"{dll} {string.Join(' ', args)} did not finish: {output}");
        }

        p.WaitForExit();
        lock (output)
        {
            return (p.ExitCode, output.ToString());
        }
    }

    private static void Append(StringBuilder output, string? line)
    {
        if (line is not null)
        {
            lock (output)
            {
                output.AppendLine(line);
            }
        }
    }

    private static string Find(string project, string file)
    {
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
}
