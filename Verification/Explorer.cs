using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Harness.Smp.Control;
using Microsoft.Coyote;
using Microsoft.Coyote.Logging;
using Microsoft.Coyote.SystematicTesting;

namespace Harness.Verification;

public enum ExploreStrategy
{
    /// <summary>Uniformly random scheduling and choices.</summary>
    Random,
    /// <summary>PCT: priority-based, with <see cref="ExploreOptions.StrategyBound"/> priority changes per run.</summary>
    Prioritized,
    /// <summary>Keeps the running operation with probability 1 - 0.5^N (N = <see cref="ExploreOptions.StrategyBound"/>).</summary>
    Probabilistic,
    /// <summary>Round-robin with at most <see cref="ExploreOptions.StrategyBound"/> random delays per run.</summary>
    DelayBounding,
    /// <summary>Coyote's reinforcement-learning strategy.</summary>
    QLearning,
}

public sealed record ExploreOptions
{
    /// <summary>Executions to try before giving up.</summary>
    public uint Iterations { get; init; } = 100;

    /// <summary>Seed of Coyote's random choices; null: a fresh one (reported, so the run can be repeated).</summary>
    public uint? Seed { get; init; }

    public ExploreStrategy Strategy { get; init; } = ExploreStrategy.Random;

    /// <summary>The strategy's parameter: priority changes (Prioritized), delays (DelayBounding), N (Probabilistic).</summary>
    public uint StrategyBound { get; init; } = 10;

    /// <summary>
    /// Scheduling steps (points, thread starts, integer choices) per execution before Coyote cuts
    /// it short; always passed to Coyote explicitly, since otherwise some strategies silently stop
    /// at 10,000. A cut execution is neither a bug nor a pass: see <see cref="ExploreReport.StepBoundHits"/>.
    /// </summary>
    public uint MaxSchedulingSteps { get; init; } = 100_000;

    /// <summary>Where a bug's trace files go; null: a harness-verification folder under the temp directory.</summary>
    public string? TraceDirectory { get; init; }

    /// <summary>Wall-clock budget in seconds for the whole exploration; 0: none.</summary>
    public int TimeoutSeconds { get; init; }

    /// <summary>Called at the start of every iteration with its 0-based number (a progress display).</summary>
    public Action<int>? OnIteration { get; init; }

    /// <summary>Stops the exploration after the running iteration (a signal); the report covers the iterations run.</summary>
    public CancellationToken Cancel { get; init; }
}

/// <summary>
/// The outcome of an exploration. Iteration is 1-based (the execution that failed); TracePath
/// is the reproducible trace that <see cref="Explorer.Replay"/> takes.
/// </summary>
public sealed record ExploreReport(
    string Scenario,
    bool BugFound,
    int? Iteration,
    int IterationsRun,
    string? Failure,
    string? TracePath,
    string? ReadableTracePath,
    uint Seed,
    ExploreStrategy Strategy,
    long TotalSteps,
    int MaxStepsInAnIteration,
    int StepBoundHits,
    TimeSpan Elapsed,
    string Log)
{
    /// <summary>The failing execution's Coyote reproducible trace (the text of TracePath), or null.</summary>
    public string? CoyoteTrace { get; init; }

    public override string ToString() => BugFound
        ? $"{Scenario}: bug found in iteration {Iteration} of {IterationsRun} ({Strategy}, seed {Seed}, {Elapsed.TotalSeconds:F1} s): {Failure}\ntrace: {TracePath}"
        : $"{Scenario}: no bug in {IterationsRun} iterations ({Strategy}, seed {Seed}, {TotalSteps} steps, {StepBoundHits} cut at the step bound, {Elapsed.TotalSeconds:F1} s)";
}

/// <summary>Per-seed explorations of one scenario: how often, and after how many iterations, its bug was found.</summary>
public sealed record SurveyReport(string Scenario, ExploreStrategy Strategy, uint Budget, IReadOnlyList<ExploreReport> Runs)
{
    public int Found => Runs.Count(r => r.BugFound);
    public IEnumerable<int> IterationsToFind => Runs.Where(r => r.BugFound).Select(r => r.Iteration!.Value);
    public double MeanIterations => Found == 0 ? double.NaN : IterationsToFind.Average();
    public int MaxIterations => Found == 0 ? 0 : IterationsToFind.Max();
    public TimeSpan MeanTime => TimeSpan.FromTicks((long)Runs.Average(r => r.Elapsed.Ticks));

    public override string ToString() =>
        $"{Scenario} ({Strategy}, budget {Budget}): found with {Found} of {Runs.Count} seeds; iterations to find: mean {MeanIterations:F1}, max {MaxIterations}; " +
        $"mean time per exploration {MeanTime.TotalSeconds:F2} s";
}

public sealed record ReplayReport(string Scenario, string TracePath, bool Reproduced, string? Failure, TimeSpan Elapsed, string Log);

/// <summary>Thrown when a trace file cannot be used for a replay; the message names the file.</summary>
public sealed class TraceFileException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Explores a scenario's executions with Coyote's testing engine, and replays a saved trace.
/// The process must have the scheduling-point switch on (<see cref="Seams.PointsSwitch"/>) before
/// any machine type is used, or only slice boundaries interleave.
/// </summary>
public static class Explorer
{
    public static ExploreReport Explore(Scenario scenario, ExploreOptions? options = null)
    {
        var o = options ?? new ExploreOptions();
        CheckSeams(scenario);
        if (o.Iterations == 0) throw new ArgumentOutOfRangeException(nameof(options), "at least one iteration");
        if (o.MaxSchedulingSteps == 0) throw new ArgumentOutOfRangeException(nameof(options), "MaxSchedulingSteps must be positive");
        uint seed = o.Seed ?? (uint)System.Random.Shared.Next();
        var config = Base()
            .WithTestingIterations(o.Iterations)
            .WithMaxSchedulingSteps(o.MaxSchedulingSteps)
            .WithRandomGeneratorSeed(seed);
        config = o.Strategy switch
        {
            ExploreStrategy.Random => config.WithRandomStrategy(),
            ExploreStrategy.Prioritized => config.WithPrioritizationStrategy(false, o.StrategyBound),
            ExploreStrategy.Probabilistic => config.WithProbabilisticStrategy(o.StrategyBound),
            ExploreStrategy.DelayBounding => config.WithDelayBoundingStrategy(false, o.StrategyBound),
            ExploreStrategy.QLearning => config.WithQLearningStrategy(),
            _ => throw new ArgumentOutOfRangeException(nameof(options), $"unknown strategy {o.Strategy}"),
        };
        // The time budget and a cancellation end the exploration at the next iteration (not
        // Coyote's testing timeout, which runs iterations without bound until it expires, ignoring
        // the count; nor only TestingEngine.Stop, which a long exploration was seen to ignore):
        // the remaining iterations do nothing and are not counted.
        var budget = o.TimeoutSeconds > 0 ? TimeSpan.FromSeconds(o.TimeoutSeconds) : TimeSpan.MaxValue;
        bool stopped = false;
        int ran = 0;

        var log = new StringWriter();
        var sw = Stopwatch.StartNew();
        using var engine = TestingEngine.Create(config, () =>
        {
            if (stopped) return;
            ran++;
            scenario.RunOnce();
        });
        engine.SetLogger(new TextWriterLogger(log, VerbosityLevel.Info));
        int iteration = -1;
        engine.RegisterStartIterationCallBack(i =>
        {
            if (stopped) return;
            if (o.Cancel.IsCancellationRequested || sw.Elapsed >= budget)
            {
                stopped = true;
                engine.Stop();
                return;
            }
            iteration = (int)i;
            o.OnIteration?.Invoke(iteration);
        });
        using (o.Cancel.Register(engine.Stop)) engine.Run();
        sw.Stop();
        var report = engine.TestReport;
        ThrowOnInternalErrors(report, scenario.Name, log);

        bool bug = report.NumOfFoundBugs > 0;
        string? failure = bug ? report.BugReports.FirstOrDefault() : null;
        string? tracePath = null, readablePath = null;
        if (bug)
        {
            string dir = o.TraceDirectory ?? Path.Combine(Path.GetTempPath(), "harness-verification");
            Directory.CreateDirectory(dir);
            string stem = Path.Combine(dir, $"{FileSafe(scenario.Name)}-{o.Strategy.ToString().ToLowerInvariant()}-seed{seed}");
            tracePath = stem + ".trace.json";
            File.WriteAllText(tracePath, engine.ReproducibleTrace);
            readablePath = stem + ".log";
            File.WriteAllText(readablePath, $"scenario: {scenario.Name}\nfailure: {failure}\n\n{engine.ReadableTrace}");
        }
        int run = bug ? iteration + 1 : stopped ? ran : (int)Math.Max(report.NumOfExploredUnfairPaths + report.NumOfExploredFairPaths, iteration + 1);
        return new ExploreReport(scenario.Name, bug, bug ? iteration + 1 : null, run, failure, tracePath, readablePath, seed, o.Strategy,
            report.TotalExploredUnfairSteps + report.TotalExploredFairSteps,
            Math.Max(report.MaxExploredUnfairSteps, report.MaxExploredFairSteps),
            report.MaxUnfairStepsHitInUnfairTests + report.MaxUnfairStepsHitInFairTests + report.MaxFairStepsHitInFairTests,
            sw.Elapsed, log.ToString()) { CoyoteTrace = bug ? engine.ReproducibleTrace : null };
    }

    /// <summary>
    /// Explores the scenario `explorations` times, each a full exploration within the options'
    /// budget from its own seed, to measure how many iterations finding its bug takes: the
    /// numbers a budget is set from. Coyote seeds iteration i of an exploration with seed + i, so
    /// the seeds are spread far apart (from options.Seed, default 1) to keep the explorations
    /// independent; nearby seeds would replay shifted copies of the same executions.
    /// </summary>
    public static SurveyReport Survey(Scenario scenario, ExploreOptions options, int explorations)
    {
        const uint stride = 1_000_003;
        uint first = options.Seed ?? 1;
        var runs = Enumerable.Range(0, explorations)
            .Select(k => Explore(scenario, options with { Seed = unchecked(first + (uint)k * stride) }))
            .ToList();
        return new SurveyReport(scenario.Name, options.Strategy, options.Iterations, runs);
    }

    /// <summary>Runs the scenario once, following the trace's decisions; Reproduced: the same kind of failure happened.</summary>
    public static ReplayReport Replay(Scenario scenario, string traceFile)
    {
        CheckSeams(scenario);
        string text;
        try { text = File.ReadAllText(traceFile); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new TraceFileException($"{traceFile}: cannot read the trace file: {e.Message}", e);
        }
        return ReplayText(scenario, text, traceFile);
    }

    /// <summary>Replays a Coyote reproducible trace given as text; source names it in messages and the report.</summary>
    public static ReplayReport ReplayText(Scenario scenario, string text, string source)
    {
        CheckSeams(scenario);
        string traceFile = source;
        var (unfair, fair) = ValidateTrace(traceFile, text);

        var config = Base()
            .WithTestingIterations(1)
            .WithMaxSchedulingSteps(unfair, fair)
            .WithReproducibleTrace(text);
        var log = new StringWriter();
        var sw = Stopwatch.StartNew();
        TestReport report;
        try
        {
            using var engine = TestingEngine.Create(config, scenario.RunOnce);
            engine.SetLogger(new TextWriterLogger(log, VerbosityLevel.Info));
            engine.Run();
            report = engine.TestReport;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new TraceFileException($"{traceFile}: the trace cannot be replayed on scenario {scenario.Name}: {e.Message}", e);
        }
        sw.Stop();
        if (report.InternalErrors.Count > 0)
            throw new TraceFileException($"{traceFile}: the trace does not replay on scenario {scenario.Name} (a different scenario or options?): " +
                string.Join("; ", report.InternalErrors));
        bool bug = report.NumOfFoundBugs > 0;
        return new ReplayReport(scenario.Name, traceFile, bug, bug ? report.BugReports.FirstOrDefault() : null, sw.Elapsed, log.ToString());
    }

    /// <summary>Settings shared by explorations and replays.</summary>
    private static Configuration Base() => Configuration.Create()
        .WithTelemetryEnabled(false)
        // Without rewriting, anything uncontrolled would make runs irreproducible: report it
        // instead of silently falling back to fuzzing.
        .WithSystematicFuzzingFallbackEnabled(false)
        .WithPartiallyControlledConcurrencyAllowed(false)
        // Coyote's background monitor calls an execution deadlocked when no scheduling step
        // happens for this long; building a machine on a loaded CI host must not look like one.
        // Real deadlocks (every operation paused) are seen at once, without the timeout.
        .WithDeadlockTimeout(30_000)
        .WithVerbosityEnabled(VerbosityLevel.Info);

    private static void CheckSeams(Scenario scenario)
    {
        if (scenario.NeedsSchedulingPoints && !Seams.Points)
            throw new InvalidOperationException(
                $"scenario {scenario.Name} needs scheduling points at data accesses, but they are off in this process: set the AppContext switch " +
                $"'{Seams.PointsSwitch}' to true before any machine type is used (a module initializer in a test assembly; see docs/verification.md)");
    }

    private static void ThrowOnInternalErrors(TestReport report, string name, StringWriter log)
    {
        if (report.InternalErrors.Count > 0)
            throw new InvalidOperationException($"Coyote reported internal errors exploring {name}: {string.Join("; ", report.InternalErrors)}\n{log}");
    }

    /// <summary>
    /// Checks the file is a Coyote reproducible trace before Coyote sees it (its own errors do not
    /// name the file); returns the step bounds it was recorded with.
    /// </summary>
    private static (uint Unfair, uint Fair) ValidateTrace(string path, string text)
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("Steps", out var steps) || steps.ValueKind != JsonValueKind.Array
                || !root.TryGetProperty("Settings", out var settings) || settings.ValueKind != JsonValueKind.Object)
                throw new TraceFileException($"{path}: not a Coyote reproducible trace (expected a JSON object with \"Settings\" and \"Steps\")");
            if (steps.GetArrayLength() == 0)
                throw new TraceFileException($"{path}: the trace has no steps (it was not saved from a failing execution)");
            foreach (var step in steps.EnumerateArray())
                if (step.ValueKind != JsonValueKind.String)
                    throw new TraceFileException($"{path}: not a Coyote reproducible trace (a step is not a string)");
            uint unfair = Bound(settings, "MaxUnfairSchedulingSteps"), fair = Bound(settings, "MaxFairSchedulingSteps");
            uint needed = (uint)steps.GetArrayLength() + 1;
            return (Math.Max(unfair, needed), Math.Max(Math.Max(fair, unfair), needed));
        }
        catch (JsonException e)
        {
            throw new TraceFileException($"{path}: not a Coyote reproducible trace (invalid JSON: {e.Message})", e);
        }

        static uint Bound(JsonElement settings, string name) =>
            settings.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetUInt32(out uint n) ? n : 0;
    }

    private static string FileSafe(string name)
    {
        var sb = new StringBuilder();
        foreach (char c in name) sb.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '-');
        return sb.ToString();
    }
}
