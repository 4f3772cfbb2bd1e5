using System.Globalization;

namespace BnbDist.Collectives;

/// <summary>
/// Ends a worker whose launcher agent died. <c>bnbrun</c> sets BNBDIST_AGENT_PID; an agent killed with SIGKILL cannot
/// stop its workers, so each worker checks its parent and exits once it is no longer that agent (it was re-parented),
/// rather than lingering as an orphan that holds a GPU or blocks a collective. Linux only (reads /proc).
/// </summary>
public static class AgentWatchdog
{
    /// <summary>Environment variable with the agent's process id.</summary>
    public const string AgentPidVariable = "BNBDIST_AGENT_PID";

    /// <summary>Exit code of a worker whose agent is gone (as if killed by SIGKILL).</summary>
    public const int ExitCode = 137;

    private static int started;

    /// <summary>Starts the background check (twice a second) if BNBDIST_AGENT_PID is set; once per process.</summary>
    public static void Start()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable(AgentPidVariable), CultureInfo.InvariantCulture, out var agent) ||
            !File.Exists("/proc/self/stat") || Interlocked.Exchange(ref started, 1) == 1)
        {
            return;
        }

        var thread = new Thread(() =>
        {
            while (ParentPid() == agent)
            {
                Thread.Sleep(500);
            }

            Console.Error.WriteLine($"bnbrun agent (pid {agent}) is gone; worker {Environment.ProcessId} exits.");
            Environment.Exit(ExitCode);
        })
        { IsBackground = true, Name = "bnbrun agent watchdog" };
        thread.Start();
    }

    private static int ParentPid()
    {
        // Field 4 of /proc/self/stat, after the command name in parentheses (which may itself contain spaces).
        var stat = File.ReadAllText("/proc/self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(fields[1], CultureInfo.InvariantCulture);
    }
}
