using System.CommandLine;
using System.Xml.Linq;
using Harness.Properties;
using Harness.Properties.Generators;
using Layout = Harness.Properties.Generators.Layout;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// `harness props`: the translator's FsCheck properties (Properties/Catalog) over generated ring-0
/// programs, natively and translated. A failure is shrunk and printed as assembly with the
/// translated-vs-native diff and the one command that replays it. Exit 0 every property held, 1 one
/// failed, 2 bad input. Results go to stdout, progress to stderr.
/// </summary>
internal static class PropsCommand
{
    /// <summary>Set before any machine type is touched: the scratch-on-stack property records stores through the scheduling points.</summary>
    public static void EnableSeams() => AppContext.SetSwitch(Harness.Smp.Control.Seams.PointsSwitch, true);

    public static Command Create()
    {
        var property = new Option<string[]>("--property")
        {
            Description = $"run only these properties (repeat or comma-separate): {string.Join(", ", Catalog.Properties.Select(p => p.Name))}",
            AllowMultipleArgumentsPerToken = true,
        };
        var maxTest = new Option<int>("--max-test") { Description = "cases per property", DefaultValueFactory = _ => 100 };
        var replay = new Option<string?>("--replay") { Description = "FsCheck seed to replay: \"(seed,gamma)\" repeats a whole run (same --max-test), \"(seed,gamma,size)\" the one failing case a failure printed" };
        var vcpus = new Option<int?>("--vcpus") { Description = $"vCPUs of every generated program (1..{Layout.MaxVcpus}; default: each property's own range)" };
        var dbt = new Option<string>("--dbt") { Description = "translator configuration: default (call/ret identity), no-callret or drk (with --planted: the bug's own unless given)", DefaultValueFactory = _ => "default" };
        dbt.AcceptOnlyFromAmong([.. Harness.Dbt.DbtOptions.Configurations]);
        var prof = new Option<bool>("--prof") { Description = "attach the prof client (its counter snippets in every block)" };
        var planted = new Option<string?>("--planted") { Description = "plant a bug in the translator (see --list); alone, runs the property that catches it" };
        var junit = new Option<FileInfo?>("--junit") { Description = "also write a JUnit XML report (one test case per property)" };
        var list = new Option<bool>("--list") { Description = "name the properties and planted bugs, and exit" };
        var seeds = new Option<int?>("--seeds") { Description = "run each property from this many run seeds (1, 2, ...; with --planted: how reliably and how fast its twin is found) and print the statistics instead of one run's result" };
        var pieces = new Option<int?>("--pieces") { Description = "at most this many top-level pieces per generated program (default: each property's own; the mean program size is in the summary)" };
        var threads = new Option<int>("--threads") { Description = "check cases on this many host threads (the same cases and the same first failure as on one)", DefaultValueFactory = _ => Environment.ProcessorCount };
        var cmd = new Command("props", "FsCheck properties of the translator over generated programs; failures shrunk to minimal assembly (docs/properties.md)")
        {
            property, maxTest, replay, vcpus, dbt, prof, planted, junit, list, threads, pieces, seeds,
        };
        cmd.SetAction((r, ct) => Task.FromResult(Run(new PropsSettings(
            r.GetValue(property) ?? [], r.GetValue(maxTest), r.GetValue(replay), r.GetValue(vcpus), r.GetResult(dbt) is { Implicit: false } ? r.GetValue(dbt)! : null, r.GetValue(prof),
            r.GetValue(planted), r.GetValue(junit), r.GetValue(list), r.GetValue(threads), r.GetValue(pieces), r.GetValue(seeds)), ct)));
        return cmd;
    }

    /// <summary>Dbt: the --dbt given, or null (default, or the planted bug's configuration).</summary>
    private sealed record PropsSettings(string[] Properties, int MaxTest, string? Replay, int? Vcpus, string? Dbt, bool Prof,
        string? Planted, FileInfo? Junit, bool List, int Threads, int? Pieces, int? Seeds);

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"harness: {message}");
        Console.Error.WriteLine("harness: see 'harness props --help' (and --list for the names)");
        return ExitCodes.BadInput;
    }

    private static int Run(PropsSettings s, CancellationToken ct)
    {
        var output = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected) output.Profile.Width = 160;
        if (s.List) { PrintList(output); return 0; }

        // Everything is checked before the first case runs.
        var names = s.Properties.SelectMany(p => p.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Distinct().ToList();
        if (names.FirstOrDefault(n => Catalog.Properties.All(p => p.Name != n)) is { } unknown)
            return Fail($"--property: no property named '{unknown}' (properties: {string.Join(", ", Catalog.Properties.Select(p => p.Name))})");
        PlantedBug? bug = null;
        if (s.Planted is { } pn && (bug = Catalog.Planted.FirstOrDefault(b => b.Name == pn)) is null)
            return Fail($"--planted: no planted bug named '{pn}' (planted: {string.Join(", ", Catalog.Planted.Select(b => b.Name))})");
        if (s.MaxTest is < 1 or > 1_000_000) return Fail($"--max-test must be between 1 and 1000000 (got {s.MaxTest})");
        if (s.Seeds is < 1 or > 10_000) return Fail($"--seeds must be between 1 and 10000 (got {s.Seeds})");
        if (s.Seeds is not null && s.Replay is not null) return Fail("--seeds and --replay exclude each other (a replay is one seed)");
        if (s.Seeds is not null && s.Junit is not null) return Fail("--seeds prints statistics; --junit reports one run");
        if (s.Pieces is < 1 or > 200) return Fail($"--pieces must be between 1 and 200 (got {s.Pieces})");
        if (s.Threads is < 1 or > 256) return Fail($"--threads must be between 1 and 256 (got {s.Threads})");
        if (s.Vcpus is { } v && (v < 1 || v > Layout.MaxVcpus)) return Fail($"--vcpus must be between 1 and {Layout.MaxVcpus} (got {v})");
        ReplaySeed? replay = null;
        if (s.Replay is { } text)
        {
            try { replay = ReplaySeed.Parse(text); }
            catch (FormatException e) { return Fail(e.Message); }
        }
        if (s.Junit is { } j && Directory.Exists(j.FullName)) return Fail($"--junit: {j.FullName} is a directory");
        if (s.Junit is { Directory: { Exists: false } d }) return Fail($"--junit: the directory {d.FullName} does not exist");

        var defs = names.Count > 0 ? names.Select(Catalog.Property).ToList()
            : bug is not null ? [Catalog.Property(bug.Property)]
            : Catalog.Properties.ToList();
        if (replay is not null && defs.Count != 1)
            return Fail("--replay reproduces one property's run: name it with --property (the failure's replay line does)");
        var setting = new Setting(s.Dbt ?? bug?.Configuration ?? "default", s.Prof || (bug?.Prof ?? false), bug?.Apply(Harness.Dbt.DbtOptions.Default));

        var runs = new List<(PropertyDef Def, GenOptions Gen, string? Skip)>();
        foreach (var def in defs)
        {
            var gen = s.Pieces is { } np ? def.Generation with { MaxPieces = np } : def.Generation;
            string? skip = null;
            if (s.Vcpus is { } n)
            {
                if (n > def.Generation.MaxVcpus)
                    skip = $"checks {(def.Generation.MaxVcpus == 1 ? "1 vCPU" : $"at most {def.Generation.MaxVcpus} vCPUs")} (the check's scope; docs/properties.md)";
                gen = gen with { MinVcpus = n, MaxVcpus = n };
            }
            if (skip is not null && names.Contains(def.Name)) return Fail($"--vcpus {s.Vcpus}: {def.Name} {skip}");
            runs.Add((def, gen, skip));
        }

        string what = $"{s.MaxTest} case(s) each, {setting.Configuration}{(setting.Prof ? "+prof" : "")}"
                      + (bug is not null ? $", planted bug {bug.Name}" : "") + (s.Vcpus is { } vv ? $", {vv} vCPU(s)" : "")
                      + (s.Pieces is { } pp ? $", at most {pp} pieces" : "")
                      + (replay is { } rs ? $", replaying {rs}" : "");
        Console.Error.WriteLine($"harness props: {runs.Count} propert{(runs.Count == 1 ? "y" : "ies")}, {what}");

        if (s.Seeds is { } seedCount) return RunSeeds(output, runs, setting, s, seedCount, ct);

        var reports = new List<(PropertyDef Def, CheckReport? Report, string? Skip)>();
        bool interrupted = false;
        foreach (var (def, gen, skip) in runs)
        {
            if (skip is not null) { reports.Add((def, null, skip)); continue; }
            try
            {
                var report = WithProgress(def.Name, s.MaxTest, replay?.Size is not null, progress =>
                    PropertyRunner.Run(def, setting, new CheckOptions { MaxTest = replay?.Size is not null ? 1 : s.MaxTest, Replay = replay, Progress = progress, Cancel = ct, Threads = s.Threads }, gen));
                reports.Add((def, report, null));
            }
            catch (OperationCanceledException)
            {
                interrupted = true;
                break;
            }
        }

        PrintSummary(output, reports);
        foreach (var (def, r, _) in reports)
            if (r is { Passed: false }) PrintFailure(output, def, r, s, bug);
        if (s.Junit is { } file) WriteJunit(file, reports, what);
        if (interrupted)
        {
            Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}");
            return Signals.ExitCode;
        }
        return reports.Any(x => x.Report is { Passed: false }) ? 1 : 0;
    }

    /// <summary>
    /// Each property from run seeds (i, SeedGamma) for i = 1..n: how many runs failed, and for those the
    /// cases to the first failure, the shrink time and the shrunk length (median and max): the numbers
    /// docs/properties.md quotes for the planted twins. Exit 0 (statistics, not a verdict).
    /// </summary>
    private static int RunSeeds(IAnsiConsole output, List<(PropertyDef Def, GenOptions Gen, string? Skip)> runs, Setting setting, PropsSettings s, int n, CancellationToken ct)
    {
        var t = new Table().AddColumn("property").AddColumn("setting").AddColumn(new TableColumn("failed").RightAligned())
            .AddColumn(new TableColumn("cases to failure (median / max)").RightAligned()).AddColumn(new TableColumn("shrink time (median / max)").RightAligned())
            .AddColumn(new TableColumn("shrunk insns (median / max)").RightAligned()).AddColumn(new TableColumn("cases/s").RightAligned())
            .Caption($"{n} run seeds (1..{n}, {SeedGamma}), at most {s.MaxTest} cases each; medians and maxima over the runs that failed");
        foreach (var (def, gen, skip) in runs)
        {
            if (skip is not null) continue;
            var found = new List<CheckReport>();
            int cases = 0;
            double seconds = 0;
            for (int i = 1; i <= n; i++)
            {
                CheckReport r;
                try { r = PropertyRunner.Run(def, setting, new CheckOptions { MaxTest = s.MaxTest, Replay = new ReplaySeed((ulong)i, SeedGamma), Cancel = ct, Threads = s.Threads }, gen); }
                catch (OperationCanceledException)
                {
                    Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}");
                    return Signals.ExitCode;
                }
                cases += r.Tests;
                seconds += r.Passed ? r.Elapsed.TotalSeconds : r.ToFailure.TotalSeconds;
                if (!r.Passed) found.Add(r);
                Console.Error.WriteLine($"props: {def.Name}: seed {i}/{n}: {(r.Passed ? $"passed {r.Tests} cases" : $"failed at case {r.Tests}, shrunk to {r.ShrunkInstructions} insns in {r.ShrinkTime.TotalSeconds:F1} s")}");
            }
            string Stat(Func<CheckReport, double> f, string format) =>
                found.Count == 0 ? "-" : $"{Median(found.Select(f)).ToString(format)} / {found.Max(f).ToString(format)}";
            t.AddRow(def.Name, Markup.Escape(setting.ToString()), $"{found.Count}/{n}", Stat(r => r.Tests, "F0"), Stat(r => r.ShrinkTime.TotalSeconds, "F1") + " s",
                Stat(r => r.ShrunkInstructions, "F0"), $"{cases / Math.Max(1e-9, seconds):F1}");
        }
        output.Write(t);
        return 0;
    }

    /// <summary>The gamma of --seeds' run seeds (odd, well mixed: the golden-ratio increment).</summary>
    public const ulong SeedGamma = PropertyRunner.SurveyGamma;

    private static double Median(IEnumerable<double> xs)
    {
        var a = xs.Order().ToArray();
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }

    private static void PrintList(IAnsiConsole console)
    {
        var t = new Table().Title("properties").AddColumn("name").AddColumn("what it checks").AddColumn("vCPUs").AddColumn("planted twin(s)");
        foreach (var p in Catalog.Properties)
            t.AddRow(p.Name, Markup.Escape(p.Description), p.Generation.MinVcpus == p.Generation.MaxVcpus ? $"{p.Generation.MinVcpus}" : $"{p.Generation.MinVcpus}..{p.Generation.MaxVcpus}",
                string.Join(", ", Catalog.Planted.Where(b => b.Property == p.Name).Select(b => b.Name)));
        console.Write(t);
        var b = new Table().Title("planted bugs (--planted NAME)").AddColumn("name").AddColumn("the bug").AddColumn("caught by");
        foreach (var bug in Catalog.Planted)
            b.AddRow(bug.Name, Markup.Escape(bug.Description + (bug.Prof ? " (with prof)" : "") + (bug.Configuration != "default" ? $" ({bug.Configuration})" : "")), bug.Property);
        console.Write(b);
    }

    /// <summary>A Spectre progress bar on an interactive stderr, a line every 10% otherwise (logs, CI, tests).</summary>
    private static CheckReport WithProgress(string name, int maxTest, bool single, Func<Action<int, int>, CheckReport> work)
    {
        var err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        if (Console.IsErrorRedirected || !err.Profile.Capabilities.Interactive)
        {
            int lastTenth = -1, lastShrinks = -1;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var r = work((tests, shrinks) =>
            {
                int tenth = tests * 10 / Math.Max(1, maxTest);
                if (shrinks == 0 && tenth != lastTenth && !single)
                {
                    lastTenth = tenth;
                    Console.Error.WriteLine($"props: {name}: {tests}/{maxTest} cases ({clock.Elapsed.TotalSeconds:F1} s)");
                }
                else if (shrinks > 0 && (lastShrinks < 0 || shrinks - lastShrinks >= 25))
                {
                    if (lastShrinks < 0) Console.Error.WriteLine($"props: {name}: case {tests} failed; shrinking");
                    lastShrinks = shrinks;
                    Console.Error.WriteLine($"props: {name}: {shrinks} shrink step(s) ({clock.Elapsed.TotalSeconds:F1} s)");
                }
            });
            Console.Error.WriteLine($"props: {name}: {(r.Passed ? "passed" : "FAILED")}, {r.Tests} case(s), {r.Shrinks} shrink step(s), {r.Elapsed.TotalSeconds:F1} s");
            return r;
        }
        return err.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(name, maxValue: single ? 1 : maxTest);
                return work((tests, shrinks) =>
                {
                    task.Value = Math.Min(tests, task.MaxValue);
                    if (shrinks > 0) task.Description = Markup.Escape($"{name}: case {tests} failed, {shrinks} shrink step(s)");
                });
            });
    }

    private static void PrintSummary(IAnsiConsole console, List<(PropertyDef Def, CheckReport? Report, string? Skip)> reports)
    {
        var t = new Table().AddColumn("property").AddColumn("setting").AddColumn("result")
            .AddColumn(new TableColumn("cases").RightAligned()).AddColumn(new TableColumn("cases/s").RightAligned())
            .AddColumn(new TableColumn("time").RightAligned()).AddColumn(new TableColumn("mean size").RightAligned())
            .AddColumn(new TableColumn("shrunk to").RightAligned())
            .Caption("mean size: the generated programs' instructions (their pieces', the fixed scaffolding not counted)");
        foreach (var (def, r, skip) in reports)
        {
            if (r is null) { t.AddRow(def.Name, "", $"[yellow]skipped[/]: {Markup.Escape(skip ?? "")}", "", "", "", "", ""); continue; }
            t.AddRow(def.Name, Markup.Escape(r.Setting.ToString()), r.Passed ? "[green]passed[/]" : "[red]FAILED[/]", $"{r.Tests}", $"{r.CasesPerSecond:F1}",
                $"{r.Elapsed.TotalSeconds:F1} s", $"{r.MeanPieceInstructions:F1}", r.Passed ? "" : $"{r.ShrunkInstructions} insns ({r.Shrinks} steps)");
        }
        console.Write(t);
    }

    private static void PrintFailure(IAnsiConsole console, PropertyDef def, CheckReport r, PropsSettings s, PlantedBug? bug)
    {
        console.WriteLine();
        console.MarkupLine($"[red bold]{def.Name} FAILED[/] ({Markup.Escape(r.Setting.ToString())}) at case {r.Tests}, " +
                           $"{r.ToFailure.TotalSeconds:F1} s; shrunk in {r.Shrinks} step(s), {r.ShrinkTime.TotalSeconds:F1} s, to {r.ShrunkInstructions} instruction(s)");
        // Plain writes from here: Spectre would fold the diff, the listing and the replay line at its width.
        Console.Out.WriteLine(r.Failure ?? "");
        Console.Out.WriteLine("shrunk program:");
        Console.Out.WriteLine(r.Shrunk?.ToString() ?? "(none)");
        Console.Out.WriteLine($"replay: {ReplayCommand(def, r, s, bug)}");
        Console.Out.Flush();
    }

    /// <summary>The command that reruns exactly the failing case (its own seed and size) and shrinks it again.</summary>
    private static string ReplayCommand(PropertyDef def, CheckReport r, PropsSettings s, PlantedBug? bug)
    {
        var parts = new List<string> { "harness props", $"--property {def.Name}", $"--dbt {r.Setting.Configuration}" };
        if (r.Setting.Prof) parts.Add("--prof");
        if (bug is not null) parts.Add($"--planted {bug.Name}");
        if (s.Vcpus is { } v) parts.Add($"--vcpus {v}");
        if (s.Pieces is { } n) parts.Add($"--pieces {n}");
        parts.Add($"--replay \"{r.CaseSeed}\"");
        return string.Join(' ', parts);
    }

    private static void WriteJunit(FileInfo file, List<(PropertyDef Def, CheckReport? Report, string? Skip)> reports, string what)
    {
        var cases = reports.Select(x =>
        {
            var e = new XElement("testcase", new XAttribute("classname", "harness.props"), new XAttribute("name", x.Def.Name),
                new XAttribute("time", (x.Report?.Elapsed.TotalSeconds ?? 0).ToString("F3", System.Globalization.CultureInfo.InvariantCulture)));
            if (x.Report is null) e.Add(new XElement("skipped", new XAttribute("message", x.Skip ?? "")));
            else if (!x.Report.Passed)
                e.Add(new XElement("failure", new XAttribute("message", $"falsified at case {x.Report.Tests}, shrunk to {x.Report.ShrunkInstructions} instructions"),
                    new XAttribute("type", "PropertyFailed"), $"{x.Report.Failure}\nshrunk program:\n{x.Report.Shrunk}\nreplay seed: {x.Report.CaseSeed}"));
            else e.Add(new XElement("system-out", $"{x.Report.Tests} cases passed ({what})"));
            return e;
        }).ToList();
        int failures = reports.Count(x => x.Report is { Passed: false }), skipped = reports.Count(x => x.Report is null);
        string time = reports.Sum(x => x.Report?.Elapsed.TotalSeconds ?? 0).ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
        var suite = new XElement("testsuite", new XAttribute("name", "harness props"), new XAttribute("tests", reports.Count),
            new XAttribute("failures", failures), new XAttribute("errors", 0), new XAttribute("skipped", skipped), new XAttribute("time", time), cases);
        new XDocument(new XElement("testsuites", new XAttribute("tests", reports.Count), new XAttribute("failures", failures), new XAttribute("time", time), suite))
            .Save(file.FullName);
        Console.Error.WriteLine($"harness props: JUnit report written to {file.FullName}");
    }
}
