using System.Runtime.CompilerServices;
using Harness.Machine.Control;
using Xunit;

// Explorations measure budgets and share Coyote's process-wide state: one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Harness.Verification.Tests;

internal static class Support
{
    /// <summary>
    /// Scheduling points at data accesses are a static readonly flag read once, from this switch,
    /// when the machine's types initialize: set it before any of them is touched.
    /// </summary>
    [ModuleInitializer]
    internal static void EnableSchedulingPoints()
    {
        AppContext.SetSwitch(Seams.PointsSwitch, true);
        // A kernel trace is megabytes and every run has its own folder: remove it when the run
        // ends, unless asked to keep the traces (the seeds are fixed, so a rerun finds the same bugs).
        if (Environment.GetEnvironmentVariable("HARNESS_KEEP_TRACES") is not ("1" or "true"))
            AppDomain.CurrentDomain.ProcessExit += (_, _) =>
            {
                try { Directory.Delete(TraceDir, recursive: true); }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
            };
    }

    public static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Harness.sln"))) return d.FullName;
            throw new InvalidOperationException($"repository root (the folder holding Harness.sln) not found above {AppContext.BaseDirectory}");
        }
    }

    public static string TraceDir { get; } = Path.Combine(Path.GetTempPath(), "harness-verification-tests", Environment.ProcessId.ToString());
}
