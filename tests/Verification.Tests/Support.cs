using System.Runtime.CompilerServices;
using Harness.Dbt;
using Harness.Smp.Control;
using Harness.Verification.Scenarios;
using Xunit;
using Xunit.Abstractions;

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

    public static string RepoRoot => global::Harness.Tests.Shared.HarnessCli.RepoRoot;

    public static string TraceDir { get; } = Path.Combine(Path.GetTempPath(), "harness-verification-tests", Environment.ProcessId.ToString());
}

/// <summary>The explorations the scenario tests make and the checks they share; reports go to the test's output.</summary>
internal sealed class ScenarioChecks(ITestOutputHelper output)
{
    public static ExploreOptions Options(uint iterations, ExploreStrategy strategy = ExploreStrategy.Random, uint maxSteps = 50_000) => new()
    {
        Iterations = iterations, Seed = 1, Strategy = strategy, MaxSchedulingSteps = maxSteps, TraceDirectory = Support.TraceDir,
    };

    public ExploreReport Explore(Scenario s, ExploreOptions o)
    {
        var r = Explorer.Explore(s, o);
        output.WriteLine(r.ToString());
        return r;
    }

    public void AssertFoundAndReplays(Scenario s, ExploreReport r, string expected)
    {
        Assert.True(r.BugFound, $"no bug found:\n{r}\n{r.Log}");
        Assert.Contains(expected, r.Failure);
        Assert.True(File.Exists(r.TracePath), $"trace file {r.TracePath} missing");
        var replay = Explorer.Replay(s, r.TracePath!);
        output.WriteLine($"replay: {replay.Reproduced} in {replay.Elapsed.TotalSeconds:F2} s: {replay.Failure}");
        Assert.True(replay.Reproduced, $"the trace did not reproduce the bug:\n{replay.Log}");
        Assert.Equal(r.Failure, replay.Failure);
    }

    public static void AssertClean(ExploreReport r, uint iterations)
    {
        Assert.False(r.BugFound, $"unexpected bug: {r.Failure}\n{r.Log}");
        Assert.Equal((int)iterations, r.IterationsRun);
        Assert.Equal(0, r.StepBoundHits);
    }

    /// <summary>Explores from `explorations` independent seeds: every one must find the bug within its budget.</summary>
    public void AssertFoundFromEverySeed(Scenario s, ExploreOptions o, int explorations)
    {
        var r = Explorer.Survey(s, o, explorations);
        output.WriteLine(r.ToString());
        Assert.Equal(explorations, r.Found);
    }

    /// <summary>
    /// A DBT guest itself, outside Coyote: natively, and translated with the correct rules,
    /// free-running and deterministic; every run clean, with every tick taken.
    /// </summary>
    public void AssertPlainRunsPass(Func<ExecutionControl, DbtOptions?, DbtGuestOutcome> run, int ticks)
    {
        foreach (var (control, options) in new (ExecutionControl, DbtOptions?)[]
        {
            (new FreeRunning(), null),
            (new FreeRunning(), new DbtOptions()),
            (new Deterministic(quantum: 100), new DbtOptions()),
        })
        {
            var o = run(control, options);
            output.WriteLine($"{control.Name}, {(options is null ? "native" : "translated")}: {o.Result.Reason} {o.Result.ExitStatus}, {o.Ticks} ticks, {o.TicksInWindow} in the window");
            Assert.True(o.Clean, o.Bug ?? o.Problem);
            Assert.Equal(ticks, o.Ticks);
        }
    }
}
