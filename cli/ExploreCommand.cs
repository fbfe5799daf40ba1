using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Harness.Verification;
using Harness.Verification.Generic;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// `harness explore SCENARIO` and `harness replay TRACE`: Coyote's systematic exploration of a
/// scenario's vCPU interleavings and interrupt timings, the generic scenarios (the guest kernel, a
/// generated program) and the bespoke guests alike (docs/verification.md). A bug's trace is saved
/// with the scenario and options, so the replay needs nothing else. Exit 0 clean (or, for replay,
/// reproduced), 1 bug found (not reproduced), 2 bad input.
/// </summary>
internal static class ExploreCommand
{
    /// <summary>Set before any machine type is touched: the scenarios interleave at data accesses.</summary>
    public static void EnableSeams() => AppContext.SetSwitch(Harness.Smp.Control.Seams.PointsSwitch, true);

    private static readonly string[] Strategies = ["random", "pct", "probabilistic", "delay-bounding", "qlearning"];

    public static Command Create()
    {
        var scenario = new Argument<string?>("scenario") { Description = "what to explore (see --list): kernel, program, or a bespoke scenario's name", Arity = ArgumentArity.ZeroOrOne };
        var list = new Option<bool>("--list") { Description = "name the scenarios and the planted bugs, and exit" };
        var iterations = new Option<uint>("--iterations") { Description = "executions to explore", DefaultValueFactory = _ => 100 };
        var seed = new Option<uint>("--seed") { Description = "seed of Coyote's choices (the same seed, scenario and options explore the same executions)", DefaultValueFactory = _ => 1 };
        var strategy = new Option<string>("--strategy") { Description = "Coyote's scheduling strategy", DefaultValueFactory = _ => "random" };
        strategy.AcceptOnlyFromAmong(Strategies);
        var bound = new Option<uint>("--strategy-bound") { Description = "the strategy's parameter: priority changes (pct), delays (delay-bounding), N (probabilistic)", DefaultValueFactory = _ => 10 };
        var maxSteps = new Option<uint>("--max-steps") { Description = "scheduling steps per execution before it is cut (a kernel boot takes about 430k)", DefaultValueFactory = _ => 5_000_000 };
        var budget = new Option<string?>("--time-budget") { Description = "stop exploring after this long: 90, 90s, 5m, 1h" };
        var traces = new Option<DirectoryInfo>("--traces") { Description = "where a bug's trace (and its readable log) is written", DefaultValueFactory = _ => new DirectoryInfo("harness-traces") };
        var vcpus = new Option<int?>("--vcpus") { Description = "vCPUs (kernel: 1..4, default 2; program: 1..4, default 2)" };
        var dbt = new Option<string?>("--dbt") { Description = "translator: off, default, no-callret or drk (default: default, or the planted bug's own)" };
        dbt.AcceptOnlyFromAmong(["off", .. Harness.Dbt.DbtOptions.Configurations]);
        var planted = new Option<string?>("--planted") { Description = "plant a bug in the translator (see --list)" };
        var prof = new Option<bool>("--prof") { Description = "attach the prof client" };
        var client = new Option<string[]>("--client") { Description = "attach these DBT clients (repeat or comma-separate)", AllowMultipleArgumentsPerToken = true };
        var rules = new Option<FileInfo[]>("--rules") { Description = "load a translator author's assembly of rules and clients (repeatable; docs/writing-rules.md)" };
        var rule = new Option<string[]>("--rule") { Description = "MNEMONIC=RULE: translate a mnemonic with a registered rule (repeat or comma-separate)", AllowMultipleArgumentsPerToken = true };
        var workload = new Option<string[]>("--workload") { Description = "kernel: workloads after the self-test (repeat or comma-separate; default: the self-test only)", AllowMultipleArgumentsPerToken = true };
        var kernel = new Option<FileInfo?>("--kernel") { Description = "kernel, kernel-selftest: the guest kernel image (default: the bundled kernel, built if needed)" };
        var program = new Option<ulong?>("--program") { Description = "program: which generated program (default 1)" };
        var programs = new Option<int?>("--programs") { Description = "program: explore this many programs (--program, --program+1, ...), Coyote picking one per iteration (default 1)" };
        var flushes = new Option<int?>("--flushes") { Description = "program: flush the code cache this many times per execution, each at an instruction count of vCPU 0 Coyote chooses (world stops)" };
        var cacheKiB = new Option<int?>("--dbt-cache-kib") { Description = "kernel: cap the code cache's block pool at this many KiB (at least 8) so it fills and is flushed: world stops under Coyote" };
        var onAt = new Option<long?>("--dbt-on-at") { Description = "kernel: switch the DBT on when vCPU 0 has retired this many instructions" };
        var snapshotAt = new Option<long?>("--snapshot-at") { Description = "kernel: start every iteration from a snapshot taken natively when vCPU 0 has retired N instructions (the DBT switches on there)" };
        var snapshotMarker = new Option<string?>("--snapshot-marker") { Description = "kernel: the same, at the first console output containing TEXT (e.g. \"selftest: kernel ok\": the workloads start next)" };
        var delay = new Option<int?>("--delay-bound") { Description = "interrupt arrival: Coyote picks a delay in [0, N) instructions (default 64)" };
        var tso = new Option<bool>("--tso") { Description = "kernel, kernel-selftest: x86-TSO memory (a store buffer per vCPU; Coyote chooses when each store drains; docs/tso.md)" };
        var races = new Option<bool>("--races") { Description = "kernel, kernel-selftest: report data races (happens-before, KCSAN's form) as bugs, even when the run goes right" };
        var coverage = new Option<FileInfo?>("--coverage") { Description = "write the exploration's coverage (conflicting access pairs, interrupts by region and offset, points per execution) as JSON" };
        var shard = new Option<string?>("--shard") { Description = "run shard i of N (i/N): N shards with the same options together explore exactly the iterations of one run of N x --iterations; each writes shard-i-of-N.json to --traces" };
        var merge = new Option<DirectoryInfo?>("--merge") { Description = "merge the shard results under DIR (searched recursively) and print the whole exploration's summary" };
        var cmd = new Command("explore", "explore a scenario's interleavings and interrupt timings under Coyote; a bug is saved as a replayable trace (docs/verification.md)")
        {
            scenario, list, iterations, seed, strategy, bound, maxSteps, budget, traces, vcpus, dbt, planted, prof, client, rules, rule, workload, kernel, program, programs, flushes, cacheKiB, onAt, snapshotAt, snapshotMarker, delay, tso, races, shard, merge, coverage,
        };
        cmd.SetAction((r, ct) =>
        {
            string[] Split(string[]? v) => (v ?? []).SelectMany(x => x.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
            var args = new ScenarioArgs
            {
                Vcpus = r.GetValue(vcpus), Dbt = r.GetValue(dbt), Planted = r.GetValue(planted), Prof = r.GetValue(prof), Clients = Split(r.GetValue(client)), Rules = (r.GetValue(rules) ?? []).Select(f => f.FullName).ToArray(), RuleOverrides = Split(r.GetValue(rule)),
                Workloads = Split(r.GetValue(workload)), Kernel = r.GetValue(kernel)?.FullName, Program = r.GetValue(program), Programs = r.GetValue(programs), Flushes = r.GetValue(flushes), CacheKiB = r.GetValue(cacheKiB), OnAt = r.GetValue(onAt), SnapshotAt = r.GetValue(snapshotAt), SnapshotMarker = r.GetValue(snapshotMarker), DelayBound = r.GetValue(delay), Tso = r.GetValue(tso), Races = r.GetValue(races),
            };
            if (r.GetValue(merge) is { } dir) return Task.FromResult(Merge(dir, r.GetValue(scenario)));
            return Task.FromResult(Explore(r.GetValue(scenario), r.GetValue(list), args, r.GetValue(iterations), r.GetValue(seed), r.GetValue(strategy)!,
                r.GetValue(bound), r.GetValue(maxSteps), r.GetValue(budget), r.GetValue(traces)!, r.GetValue(shard), r.GetValue(coverage), ct));
        });
        return cmd;
    }

    public static Command CreateReplay()
    {
        var trace = new Argument<FileInfo>("trace") { Description = "a trace file `harness explore` wrote" };
        var cmd = new Command("replay", "re-run the execution a trace recorded and report whether its failure reproduced (exit 0 reproduced, 1 not, 2 bad input)") { trace };
        cmd.SetAction((r, ct) => Task.FromResult(Replay(r.GetValue(trace)!)));
        return cmd;
    }

    public static Command CreateReport()
    {
        var trace = new Argument<FileInfo>("trace") { Description = "a trace file `harness explore` wrote" };
        var output = new Option<FileInfo?>("-o", "--output") { Description = "write the report here (default: stdout)" };
        var format = new Option<string>("--format") { Description = "html (a self-contained page: one lane per vCPU) or text (for terminals)", DefaultValueFactory = _ => "html" };
        format.AcceptOnlyFromAmong("html", "text");
        var cmd = new Command("report", "replay a trace and write what happened: one lane per vCPU, the instructions at every scheduling point and interrupt, the failure, the replay command (exit 0 reproduced, 1 not, 2 bad input)")
        {
            trace, output, format,
        };
        cmd.SetAction((r, ct) => Task.FromResult(Report(r.GetValue(trace)!, r.GetValue(output), r.GetValue(format)!)));
        return cmd;
    }

    private static int Report(FileInfo file, FileInfo? output, string format)
    {
        if (output?.Directory is { Exists: false } d) return Fail("report", $"-o: {d.FullName}: no such directory");
        if (Load(file, "report", out var trace, out var scenario) is { } bad) return bad;
        var recorder = new TraceRecorder { Symbols = scenario.Symbols };
        ReplayReport r;
        try { r = Explorer.ReplayText(scenario with { Observe = recorder.Attach }, trace.Coyote.GetRawText(), file.FullName); }
        catch (TraceFileException e) { return Fail("report", e.Message); }
        var data = new TraceReportData(scenario.Name, file.FullName, $"harness replay {Quote(file.FullName)}", trace.Failure, r.Reproduced, r.Failure,
            recorder.Vcpus, recorder.Total, recorder.Points, recorder.Deliveries, recorder.Events);
        string text = format == "html" ? data.Html() : data.Text();
        if (output is null) Console.Write(text);
        else
        {
            try
            {
                File.WriteAllText(output.FullName + ".tmp", text);
                File.Move(output.FullName + ".tmp", output.FullName, overwrite: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return Fail("report", $"-o: {output.FullName}: {e.Message}"); }
            Console.WriteLine($"report: {output.FullName} ({recorder.Events.Count} of {recorder.Total:N0} events; the failure {(r.Reproduced ? "reproduced" : "did NOT reproduce")})");
        }
        return r.Reproduced ? 0 : 1;
    }

    private static int Fail(string command, string message)
    {
        Console.Error.WriteLine($"harness: {message}");
        Console.Error.WriteLine($"harness: see 'harness {command} --help'{(command == "explore" ? " (and --list for the names)" : "")}");
        return ExitCodes.BadInput;
    }

    private static int Explore(string? name, bool list, ScenarioArgs args, uint iterations, uint seed, string strategy, uint bound, uint maxSteps,
        string? budgetText, DirectoryInfo traces, string? shardText, FileInfo? coverageFile, CancellationToken ct)
    {
        if (list) { PrintList(); return 0; }
        ShardSpec? shard = null;
        if (shardText is not null)
        {
            try { shard = ShardSpec.Parse(shardText); }
            catch (FormatException e) { return Fail("explore", e.Message); }
        }
        if (name is null) return Fail("explore", "name a scenario (see --list)");
        if (iterations == 0) return Fail("explore", "--iterations must be at least 1");
        if (maxSteps == 0) return Fail("explore", "--max-steps must be at least 1");
        int budget = 0;
        if (budgetText is not null && !TryDuration(budgetText, out budget)) return Fail("explore", $"--time-budget: '{budgetText}' is not a duration (90, 90s, 5m, 1h)");
        if (ScenarioRegistry.All.FirstOrDefault(e => e.Name == name) is null)
            return Fail("explore", $"unknown scenario '{name}' (known: {string.Join(", ", ScenarioRegistry.All.Select(e => e.Name))})");
        if (args.Kernel is { } k && !File.Exists(k)) return Fail("explore", $"--kernel: {k}: no such file");
        if (args.Kernel is null && name == "kernel")
        {
            try { args = args with { Kernel = DefaultImage.Ensure(ct, m => Console.Error.WriteLine($"harness: {m}")) }; }
            catch (DefaultImage.BuildException e) { return Fail("explore", e.Message); }
            catch (OperationCanceledException) { Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}"); return Signals.ExitCode; }
        }
        if (coverageFile?.Directory is { Exists: false } cd) return Fail("explore", $"--coverage: {cd.FullName}: no such directory");
        try { Directory.CreateDirectory(traces.FullName); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return Fail("explore", $"--traces: {traces.FullName}: {e.Message}"); }

        Scenario scenario;
        var sw = Stopwatch.StartNew();
        try
        {
            if (name is "kernel" or "program") Console.Error.WriteLine($"harness: {name}: computing the native reference run{(args.Programs > 1 ? "s" : "")} ...");
            scenario = ScenarioRegistry.Create(name, args);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or IOException)
        {
            return Fail("explore", e.Message);
        }
        var reference = sw.Elapsed;

        var strategyValue = strategy switch
        {
            "pct" => ExploreStrategy.Prioritized,
            "probabilistic" => ExploreStrategy.Probabilistic,
            "delay-bounding" => ExploreStrategy.DelayBounding,
            "qlearning" => ExploreStrategy.QLearning,
            _ => ExploreStrategy.Random,
        };
        var progress = new Progress(iterations);
        uint shardSeed = shard?.SeedOf(seed, iterations) ?? seed;
        var options = new ExploreOptions
        {
            Iterations = iterations, Seed = shardSeed, Strategy = strategyValue, StrategyBound = bound, MaxSchedulingSteps = maxSteps,
            TraceDirectory = traces.FullName, TimeoutSeconds = budget, OnIteration = progress.Iteration, Cancel = ct,
        };
        ExploreReport report;
        try { report = Explorer.Explore(scenario, options); }
        finally { progress.Done(); }

        var output = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected) output.Profile.Width = 160;
        double secs = Math.Max(report.Elapsed.TotalSeconds, 1e-9);
        var table = new Table().AddColumn("scenario").AddColumn("result").AddColumn(new TableColumn("iterations").RightAligned())
            .AddColumn(new TableColumn("steps").RightAligned()).AddColumn(new TableColumn("max steps").RightAligned())
            .AddColumn(new TableColumn("cut at bound").RightAligned()).AddColumn(new TableColumn("time").RightAligned())
            .AddColumn(new TableColumn("iterations/s").RightAligned()).AddColumn(new TableColumn("steps/s").RightAligned());
        table.AddRow(Markup.Escape(scenario.Name), report.BugFound ? "[red]bug[/]" : "clean", $"{report.IterationsRun}", $"{report.TotalSteps:N0}",
            $"{report.MaxStepsInAnIteration:N0}", $"{report.StepBoundHits}", $"{report.Elapsed.TotalSeconds:F1} s",
            $"{report.IterationsRun / secs:F2}", $"{report.TotalSteps / secs:N0}");
        output.Write(table);
        Console.WriteLine($"{strategy} strategy, seed {seed}{(shard is { } sh ? $"; shard {sh} (iterations {sh.Global(1, iterations)}..{sh.Global((int)iterations, iterations)} of {(long)iterations * sh.Count}, from seed {shardSeed})" : "")}; native reference {reference.TotalSeconds:F1} s");
        if (scenario.Counters.Snapshot() is { Count: > 0 } seen)
            Console.WriteLine("observed: " + string.Join(", ", seen.Select(c => $"{c.Name} {c.Total:N0}")));
        if (scenario.Coverage is { } cov)
        {
            Console.Write(cov.Summary());
            if (coverageFile is not null)
            {
                try
                {
                    File.WriteAllText(coverageFile.FullName + ".tmp", cov.ToJson(scenario.Name, report.IterationsRun, report.BugFound));
                    File.Move(coverageFile.FullName + ".tmp", coverageFile.FullName, overwrite: true);
                    Console.WriteLine($"coverage: {coverageFile.FullName}");
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    Console.Error.WriteLine($"harness: --coverage: {coverageFile.FullName}: {e.Message}");
                }
            }
        }
        else if (coverageFile is not null) Console.Error.WriteLine($"harness: --coverage: scenario {name} records no coverage (only the generic scenarios do)");
        if (ct.IsCancellationRequested) Console.WriteLine($"interrupted by {Signals.Received ?? "cancellation"} after {report.IterationsRun} iterations");
        string command = Command(name, args, iterations, shardSeed, strategy, bound, maxSteps);
        if (report.BugFound)
            using (var doc = JsonDocument.Parse(report.CoyoteTrace!))
                new HarnessTrace(name, args, report.Failure ?? "", command, doc.RootElement.Clone()).Write(report.TracePath!);
        if (shard is { } s)
            new ShardResult
            {
                Scenario = name, ScenarioName = scenario.Name, Args = args, Seed = seed, Iterations = iterations, Strategy = strategy,
                Shard = s.Index, Shards = s.Count, IterationsRun = report.IterationsRun, TotalSteps = report.TotalSteps,
                MaxSteps = report.MaxStepsInAnIteration, StepBoundHits = report.StepBoundHits, Seconds = report.Elapsed.TotalSeconds,
                BugIteration = report.BugFound ? s.Global(report.Iteration!.Value, iterations) : null, Failure = report.Failure,
                Trace = report.BugFound ? Path.GetFileName(report.TracePath) : null,
                Counters = scenario.Counters.Snapshot().ToDictionary(c => c.Name, c => c.Total),
            }.Write(traces.FullName);
        if (!report.BugFound) return ct.IsCancellationRequested ? Signals.ExitCode : 0;

        Console.WriteLine(shard is { } bs ? $"bug found in iteration {report.Iteration} of this shard ({bs.Global(report.Iteration!.Value, iterations)} of the whole exploration):"
            : $"bug found in iteration {report.Iteration}:");
        Console.WriteLine(report.Failure);
        Console.WriteLine($"trace: {report.TracePath}");
        Console.WriteLine($"readable log: {report.ReadableTracePath}");
        Console.WriteLine($"replay: harness replay {Quote(report.TracePath!)}");
        Console.WriteLine($"explore again: {command}");
        return 1;
    }

    private static int Merge(DirectoryInfo dir, string? scenario)
    {
        if (scenario is not null) return Fail("explore", "--merge reads the shards' own scenario and options: give no scenario");
        ShardResult.Merged m;
        try { m = ShardResult.Merge(dir.FullName); }
        catch (FormatException e) { return Fail("explore", e.Message); }
        var a = m.First;
        var output = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected) output.Profile.Width = 160;
        var table = new Table().AddColumn("scenario").AddColumn("result").AddColumn(new TableColumn("shards").RightAligned())
            .AddColumn(new TableColumn("iterations").RightAligned()).AddColumn(new TableColumn("steps").RightAligned())
            .AddColumn(new TableColumn("max steps").RightAligned()).AddColumn(new TableColumn("cut at bound").RightAligned())
            .AddColumn(new TableColumn("host time (sum)").RightAligned());
        table.AddRow(Markup.Escape(a.ScenarioName), m.Bugs.Count > 0 ? "[red]bug[/]" : "clean", $"{m.Shards.Count}", $"{m.IterationsRun:N0}", $"{m.TotalSteps:N0}",
            $"{m.MaxSteps:N0}", $"{m.StepBoundHits}", $"{m.Seconds:F1} s");
        output.Write(table);
        Console.WriteLine($"{a.Strategy} strategy, seed {a.Seed}, {a.Iterations} iterations per shard ({(long)a.Iterations * a.Shards:N0} in all)");
        var counters = m.Shards.SelectMany(s => s.Counters).GroupBy(c => c.Key).Select(g => $"{g.Key} {g.Sum(c => c.Value):N0}").ToList();
        if (counters.Count > 0) Console.WriteLine("observed: " + string.Join(", ", counters));
        if (m.Bugs.Count == 0) return 0;
        Console.WriteLine($"{m.Bugs.Count} shard(s) found a bug; the first in the whole exploration, at iteration {m.Bugs[0].Shard.BugIteration} (shard {m.Bugs[0].Shard.Shard}):");
        Console.WriteLine(m.Bugs[0].Shard.Failure);
        foreach (var (s, d) in m.Bugs)
            Console.WriteLine($"iteration {s.BugIteration} (shard {s.Shard}): harness replay {Quote(Path.Combine(d, s.Trace ?? ""))}");
        return 1;
    }

    /// <summary>Reads a trace and rebuilds its scenario; on bad input, the exit code (the message printed).</summary>
    private static int? Load(FileInfo file, string command, out HarnessTrace trace, out Scenario scenario)
    {
        trace = null!;
        scenario = null!;
        try
        {
            trace = HarnessTrace.Read(file.FullName);
            scenario = ScenarioRegistry.Create(trace.Scenario, trace.Args);
            return null;
        }
        catch (TraceFileException e) { return Fail(command, e.Message); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException)
        {
            return Fail(command, $"{file.FullName}: the trace's scenario cannot be built here: {e.Message}");
        }
    }

    private static int Replay(FileInfo file)
    {
        if (Load(file, "replay", out var trace, out var scenario) is { } bad) return bad;
        ReplayReport r;
        try { r = Explorer.ReplayText(scenario, trace.Coyote.GetRawText(), file.FullName); }
        catch (TraceFileException e) { return Fail("replay", e.Message); }
        Console.WriteLine($"scenario: {scenario.Name}");
        Console.WriteLine($"recorded failure: {trace.Failure}");
        if (r.Reproduced && r.Failure == trace.Failure)
            Console.WriteLine($"reproduced in {r.Elapsed.TotalSeconds:F1} s: the same failure");
        else if (r.Reproduced)
            Console.WriteLine($"reproduced in {r.Elapsed.TotalSeconds:F1} s, with a different failure:\n{r.Failure}");
        else
            Console.WriteLine($"not reproduced: the replayed execution passed ({r.Elapsed.TotalSeconds:F1} s)");
        return r.Reproduced ? 0 : 1;
    }

    private static void PrintList()
    {
        var t = new Table().AddColumn("scenario").AddColumn("kind").AddColumn("options").AddColumn("what");
        foreach (var e in ScenarioRegistry.All)
            t.AddRow(e.Name, e.Generic ? "generic" : "bespoke", e.Accepts.Length == 0 ? "-" : string.Join(" ", e.Accepts.Select(a => "--" + a)), Markup.Escape(e.Description));
        var output = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected) output.Profile.Width = 200;
        output.Write(t);
        var b = new Table().AddColumn("planted bug (--planted)").AddColumn("configuration").AddColumn("what");
        foreach (var p in PlantedBugs.All) b.AddRow(p.Name, p.Configuration + (p.Prof ? "+prof" : ""), Markup.Escape(p.Description));
        output.Write(b);
    }

    /// <summary>The command line that repeats this exploration.</summary>
    private static string Command(string name, ScenarioArgs a, uint iterations, uint seed, string strategy, uint bound, uint maxSteps)
    {
        var parts = new List<string> { "harness explore", name, $"--iterations {iterations}", $"--seed {seed}" };
        if (strategy != "random") parts.Add($"--strategy {strategy} --strategy-bound {bound}");
        if (maxSteps != 5_000_000) parts.Add($"--max-steps {maxSteps}");
        if (a.Vcpus is { } v) parts.Add($"--vcpus {v}");
        if (a.Dbt is { } d) parts.Add($"--dbt {d}");
        if (a.Planted is { } p) parts.Add($"--planted {p}");
        if (a.Prof) parts.Add("--prof");
        if (a.Clients.Length > 0) parts.Add($"--client {string.Join(',', a.Clients)}");
        foreach (var dll in a.Rules) parts.Add($"--rules {Quote(dll)}");
        if (a.RuleOverrides.Length > 0) parts.Add($"--rule {string.Join(',', a.RuleOverrides)}");
        if (a.Workloads.Length > 0) parts.Add($"--workload {string.Join(',', a.Workloads)}");
        if (a.Kernel is { } k && name != "kernel") parts.Add($"--kernel {Quote(k)}");
        if (a.Program is { } g) parts.Add($"--program {g}");
        if (a.Programs is { } gs) parts.Add($"--programs {gs}");
        if (a.Flushes is { } f) parts.Add($"--flushes {f}");
        if (a.CacheKiB is { } c) parts.Add($"--dbt-cache-kib {c}");
        if (a.OnAt is { } on) parts.Add($"--dbt-on-at {on}");
        if (a.SnapshotAt is { } sa) parts.Add($"--snapshot-at {sa}");
        if (a.SnapshotMarker is { } sm) parts.Add($"--snapshot-marker \"{sm}\"");
        if (a.DelayBound is { } b) parts.Add($"--delay-bound {b}");
        if (a.Tso) parts.Add("--tso");
        if (a.Races) parts.Add("--races");
        return string.Join(' ', parts);
    }

    private static string Quote(string path) => path.Contains(' ') ? $"\"{path}\"" : path;

    private static bool TryDuration(string text, out int seconds)
    {
        seconds = 0;
        int unit = text.EndsWith('h') ? 3600 : text.EndsWith('m') ? 60 : 1;
        string number = char.IsLetter(text[^1]) ? text[..^1] : text;
        if (text.EndsWith('s') || unit > 1 || char.IsDigit(text[^1]))
            if (int.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0 && n <= int.MaxValue / unit) { seconds = n * unit; return true; }
        return false;
    }

    /// <summary>Iterations so far and their rate, on stderr: one rewritten line on a terminal, a line every 10 s otherwise.</summary>
    private sealed class Progress(uint total)
    {
        private readonly Stopwatch clock = Stopwatch.StartNew();
        private TimeSpan last = TimeSpan.Zero;
        private readonly bool terminal = !Console.IsErrorRedirected;
        private bool wrote;

        public void Iteration(int i)
        {
            var now = clock.Elapsed;
            if (now - last < (terminal ? TimeSpan.FromSeconds(0.5) : TimeSpan.FromSeconds(10))) return;
            last = now;
            string line = $"explore: iteration {i + 1}/{total}, {i / Math.Max(now.TotalSeconds, 1e-9):F2} iterations/s, {now.TotalSeconds:F0} s";
            if (terminal) { Console.Error.Write("\r" + line + "   "); wrote = true; }
            else Console.Error.WriteLine(line);
        }

        public void Done()
        {
            if (wrote) Console.Error.WriteLine();
        }
    }
}
