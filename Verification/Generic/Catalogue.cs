using System.Diagnostics;
using Harness.Properties;

namespace Harness.Verification.Generic;

/// <summary>How `harness catalogue` runs the planted bugs against the generic checkers.</summary>
public sealed record CatalogueOptions
{
    /// <summary>Independent seeds per (bug, checker).</summary>
    public int Seeds { get; init; } = 3;
    /// <summary>Iterations per exploration of the program scenario.</summary>
    public uint Iterations { get; init; } = 300;
    /// <summary>Iterations per exploration of the program scenario with flushes (the flush windows are rarer).</summary>
    public uint FlushIterations { get; init; } = 1000;
    /// <summary>Cases per property run.</summary>
    public int MaxTest { get; init; } = 1000;
    /// <summary>Iterations of the kernel scenario (12 KiB cache, so it flushes); 0: the kernel is not a checker (5 s an iteration).</summary>
    public uint KernelIterations { get; init; }
    public string? KernelPath { get; init; }
    /// <summary>Host threads for property cases.</summary>
    public int Threads { get; init; } = 1;
    /// <summary>Only these bugs (null: every one).</summary>
    public IReadOnlyList<string>? Bugs { get; init; }
    /// <summary>Only these checkers: program, program+flushes, property, kernel (null: every one that applies).</summary>
    public IReadOnlyList<string>? Checkers { get; init; }
    public string TraceDirectory { get; init; } = Path.Combine(Path.GetTempPath(), "harness-catalogue");
    public Action<string>? Progress { get; init; }
    public CancellationToken Cancel { get; init; }
}

/// <summary>
/// One planted bug against one checker over the seeds: how often and how fast it was found (in
/// iterations or cases), whether the first find replayed, and (properties) the shrunk size.
/// </summary>
public sealed record CatalogueRow(string Bug, string Checker, string Unit, int Seeds, int Found, double? MedianToFind, int? MaxToFind,
    double? MedianSeconds, bool? Replayed, double? MedianShrunk, TimeSpan Elapsed);

/// <summary>The correct translator on one checker's budget: clean, or the false positive's failure.</summary>
public sealed record CleanRow(string Checker, string Setting, string Budget, bool Clean, string? Failure, TimeSpan Elapsed);

/// <summary>
/// The seeded catalogue: every planted bug against the generic scenarios (not its bespoke guest)
/// and its property, and the correct translator on the same budgets.
/// </summary>
public static class Catalogue
{
    public static readonly string[] CheckerNames = ["program", "program+flushes", "property", "kernel"];

    public static (List<CatalogueRow> Rows, List<CleanRow> Clean) Run(CatalogueOptions o)
    {
        var bugs = o.Bugs is null ? PlantedBugs.All : o.Bugs.Select(PlantedBugs.Find).ToList();
        bool Use(string checker) => o.Checkers is null ? checker != "kernel" || o.KernelIterations > 0 : o.Checkers.Contains(checker);
        if (Use("kernel") && (o.KernelPath is null || o.KernelIterations == 0))
            throw new ArgumentException("the kernel checker needs the kernel image and at least one iteration");
        var rows = new List<CatalogueRow>();
        var clean = new List<CleanRow>();
        var cleanDone = new HashSet<string>();
        foreach (var bug in bugs)
        {
            o.Cancel.ThrowIfCancellationRequested();
            if (bug.Tso && !Use("kernel"))
            {
                o.Progress?.Invoke($"{bug.Name}: wrong only under x86-TSO, which only the kernel checker runs: skipped (add --checker kernel)");
                continue;
            }
            if (Use("program")) rows.Add(Explore(o, bug, "program", new ScenarioArgs { Planted = bug.Name, Programs = 100 }, o.Iterations));
            if (Use("program+flushes")) rows.Add(Explore(o, bug, "program+flushes", new ScenarioArgs { Planted = bug.Name, Programs = 100, Flushes = 2 }, o.FlushIterations));
            if (Use("kernel"))
                rows.Add(Explore(o, bug, "kernel", new ScenarioArgs { Planted = bug.Name, Kernel = o.KernelPath, CacheKiB = 12, Tso = bug.Tso }, o.KernelIterations, maxSteps: 5_000_000));
            if (Use("property") && bug.Property is not null) rows.Add(Property(o, bug));

            // The correct translator on the same budgets, once per checker and setting.
            void Clean(string key, Func<CleanRow> run) { if (cleanDone.Add(key)) clean.Add(run()); }
            string setting = bug.Configuration + (bug.Prof ? "+prof" : "");
            var plain = new ScenarioArgs { Dbt = bug.Configuration, Prof = bug.Prof, Programs = 100 };
            if (Use("program")) Clean($"program {setting}", () => ExploreClean(o, "program", setting, plain, o.Iterations));
            if (Use("program+flushes")) Clean($"program+flushes {setting}", () => ExploreClean(o, "program+flushes", setting, plain with { Flushes = 2 }, o.FlushIterations));
            if (Use("kernel"))
                Clean($"kernel {setting}{(bug.Tso ? " tso" : "")}", () => ExploreClean(o, "kernel", setting + (bug.Tso ? " (TSO)" : ""),
                    new ScenarioArgs { Dbt = bug.Configuration, Prof = bug.Prof, Kernel = o.KernelPath, CacheKiB = 12, Tso = bug.Tso }, o.KernelIterations, maxSteps: 5_000_000));
            if (Use("property") && bug.Property is not null) Clean($"{bug.Property} {setting}", () => PropertyClean(o, bug));
        }
        return (rows, clean);
    }

    private static uint SeedOf(int k) => unchecked(1 + (uint)k * 1_000_003);

    private static CatalogueRow Explore(CatalogueOptions o, PlantedDbtBug bug, string checker, ScenarioArgs args, uint iterations, uint maxSteps = 200_000)
    {
        var sw = Stopwatch.StartNew();
        var scenario = ScenarioRegistry.Create(args.Kernel is null ? "program" : "kernel", args);
        var found = new List<ExploreReport>();
        for (int k = 0; k < o.Seeds; k++)
        {
            o.Cancel.ThrowIfCancellationRequested();
            var r = Explorer.Explore(scenario, new ExploreOptions
            {
                Iterations = iterations, Seed = SeedOf(k), MaxSchedulingSteps = maxSteps, TraceDirectory = o.TraceDirectory, Cancel = o.Cancel,
            });
            o.Progress?.Invoke($"{bug.Name}: {checker}: seed {k + 1}/{o.Seeds}: {(r.BugFound ? $"found at iteration {r.Iteration} ({r.Elapsed.TotalSeconds:F1} s)" : $"not found in {r.IterationsRun}")}");
            if (r.BugFound) found.Add(r);
        }
        bool? replayed = null;
        if (found.Count > 0)
        {
            var replay = Explorer.Replay(scenario, found[0].TracePath!);
            replayed = replay.Reproduced && replay.Failure == found[0].Failure;
        }
        return new CatalogueRow(bug.Name, checker, "iterations", o.Seeds, found.Count,
            found.Count == 0 ? null : Median(found.Select(r => (double)r.Iteration!.Value)), found.Count == 0 ? null : found.Max(r => r.Iteration!.Value),
            found.Count == 0 ? null : Median(found.Select(r => r.Elapsed.TotalSeconds)), replayed, null, sw.Elapsed);
    }

    private static CatalogueRow Property(CatalogueOptions o, PlantedDbtBug twin)
    {
        var sw = Stopwatch.StartNew();
        var def = Harness.Properties.Catalog.Property(twin.Property!);
        var found = new List<CheckReport>();
        for (int k = 1; k <= o.Seeds; k++)
        {
            var r = PropertyRunner.Run(def, twin.Setting, new CheckOptions
            {
                MaxTest = o.MaxTest, Replay = new ReplaySeed((ulong)k, PropertyRunner.SurveyGamma), Threads = o.Threads, Cancel = o.Cancel,
            }, def.Generation);
            o.Progress?.Invoke($"{twin.Name}: {twin.Property}: seed {k}/{o.Seeds}: {(r.Passed ? $"not found in {r.Tests} cases" : $"found at case {r.Tests} ({r.ToFailure.TotalSeconds:F1} s), shrunk to {r.ShrunkInstructions} instructions")}");
            if (!r.Passed) found.Add(r);
        }
        bool? replayed = null;
        if (found.Count > 0 && found[0].CaseSeed is { } seed)
        {
            // The failing case again, from the seed its failure printed.
            var again = PropertyRunner.Run(def, twin.Setting, new CheckOptions { MaxTest = 1, Replay = seed, Cancel = o.Cancel }, def.Generation);
            replayed = !again.Passed;
        }
        return new CatalogueRow(twin.Name, $"property {twin.Property}", "cases", o.Seeds, found.Count,
            found.Count == 0 ? null : Median(found.Select(r => (double)r.Tests)), found.Count == 0 ? null : found.Max(r => r.Tests),
            found.Count == 0 ? null : Median(found.Select(r => r.ToFailure.TotalSeconds)), replayed,
            found.Count == 0 ? null : Median(found.Select(r => (double)r.ShrunkInstructions)), sw.Elapsed);
    }

    private static CleanRow ExploreClean(CatalogueOptions o, string checker, string setting, ScenarioArgs args, uint iterations, uint maxSteps = 200_000)
    {
        var sw = Stopwatch.StartNew();
        var scenario = ScenarioRegistry.Create(args.Kernel is null ? "program" : "kernel", args);
        var r = Explorer.Explore(scenario, new ExploreOptions
        {
            Iterations = iterations, Seed = SeedOf(0), MaxSchedulingSteps = maxSteps, TraceDirectory = o.TraceDirectory, Cancel = o.Cancel,
        });
        o.Progress?.Invoke($"correct translator: {checker} ({setting}): {(r.BugFound ? "FALSE POSITIVE" : "clean")} in {r.IterationsRun} iterations");
        return new CleanRow(checker, setting, $"{iterations} iterations", !r.BugFound && r.StepBoundHits == 0,
            r.BugFound ? r.Failure : r.StepBoundHits > 0 ? $"{r.StepBoundHits} executions cut at the step bound" : null, sw.Elapsed);
    }

    private static CleanRow PropertyClean(CatalogueOptions o, PlantedDbtBug twin)
    {
        var sw = Stopwatch.StartNew();
        var def = Harness.Properties.Catalog.Property(twin.Property!);
        var setting = twin.Setting with { Options = null };
        var r = PropertyRunner.Run(def, setting, new CheckOptions
        {
            MaxTest = o.MaxTest, Replay = new ReplaySeed(1, PropertyRunner.SurveyGamma), Threads = o.Threads, Cancel = o.Cancel,
        }, def.Generation);
        o.Progress?.Invoke($"correct translator: property {twin.Property} ({setting}): {(r.Passed ? "clean" : "FALSE POSITIVE")} in {r.Tests} cases");
        return new CleanRow($"property {twin.Property}", setting.ToString(), $"{o.MaxTest} cases", r.Passed, r.Failure, sw.Elapsed);
    }

    private static double Median(IEnumerable<double> xs)
    {
        var a = xs.Order().ToArray();
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }
}
