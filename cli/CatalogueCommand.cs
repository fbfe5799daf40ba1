using System.CommandLine;
using System.Diagnostics;
using Harness.Verification.Generic;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// `harness catalogue`: every planted bug against the generic checkers (the program scenario, with
/// and without cache flushes, the kernel scenario, the bug's property), over several seeds, and the
/// correct translator on the same budgets (docs/verification.md). Exit 0 when every bug was found
/// by some checker and the correct translator was clean everywhere, 1 otherwise, 2 bad input.
/// </summary>
internal static class CatalogueCommand
{
    public static Command Create()
    {
        var seeds = new Option<int>("--seeds") { Description = "independent seeds per bug and checker", DefaultValueFactory = _ => 3 };
        var bug = new Option<string[]>("--bug") { Description = "only these planted bugs (repeat or comma-separate; see harness explore --list)", AllowMultipleArgumentsPerToken = true };
        var checker = new Option<string[]>("--checker") { Description = $"only these checkers: {string.Join(", ", Catalogue.CheckerNames)} (default: all but kernel)", AllowMultipleArgumentsPerToken = true };
        var iterations = new Option<uint>("--iterations") { Description = "iterations per exploration of the program scenario", DefaultValueFactory = _ => 300 };
        var flushIterations = new Option<uint>("--flush-iterations") { Description = "iterations per exploration of the program scenario with 2 flushes", DefaultValueFactory = _ => 1000 };
        var maxTest = new Option<int>("--max-test") { Description = "cases per property run", DefaultValueFactory = _ => 1000 };
        var kernelIterations = new Option<uint>("--kernel-iterations") { Description = "iterations of the kernel scenario (12 KiB cache); with --checker kernel", DefaultValueFactory = _ => 3 };
        var threads = new Option<int>("--threads") { Description = "host threads for property cases", DefaultValueFactory = _ => Environment.ProcessorCount };
        var cmd = new Command("catalogue", "every planted bug against the generic scenarios and the properties over several seeds, and the correct translator on the same budgets")
        {
            seeds, bug, checker, iterations, flushIterations, maxTest, kernelIterations, threads,
        };
        cmd.SetAction((r, ct) =>
        {
            string[] Split(string[]? v) => (v ?? []).SelectMany(x => x.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
            return Task.FromResult(Run(r.GetValue(seeds), Split(r.GetValue(bug)), Split(r.GetValue(checker)), r.GetValue(iterations), r.GetValue(flushIterations),
                r.GetValue(maxTest), r.GetValue(kernelIterations), r.GetValue(threads), ct));
        });
        return cmd;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"harness: {message}");
        Console.Error.WriteLine("harness: see 'harness catalogue --help'");
        return ExitCodes.BadInput;
    }

    private static int Run(int seeds, string[] bugs, string[] checkers, uint iterations, uint flushIterations, int maxTest, uint kernelIterations, int threads, CancellationToken ct)
    {
        if (seeds is < 1 or > 1000) return Fail($"--seeds must be between 1 and 1000 (got {seeds})");
        if (bugs.FirstOrDefault(b => PlantedBugs.All.All(p => p.Name != b)) is { } unknown)
            return Fail($"--bug: unknown planted bug '{unknown}' (known: {string.Join(", ", PlantedBugs.All.Select(p => p.Name))})");
        if (checkers.FirstOrDefault(c => !Catalogue.CheckerNames.Contains(c)) is { } badChecker)
            return Fail($"--checker: unknown checker '{badChecker}' (known: {string.Join(", ", Catalogue.CheckerNames)})");
        if (iterations == 0 || flushIterations == 0) return Fail("--iterations and --flush-iterations must be at least 1");
        if (maxTest is < 1 or > 1_000_000) return Fail($"--max-test must be between 1 and 1000000 (got {maxTest})");
        if (threads is < 1 or > 256) return Fail($"--threads must be between 1 and 256 (got {threads})");
        string? kernel = null;
        if (checkers.Contains("kernel"))
        {
            if (kernelIterations == 0) return Fail("--kernel-iterations must be at least 1");
            try { kernel = DefaultImage.Ensure(ct, m => Console.Error.WriteLine($"harness: {m}")); }
            catch (DefaultImage.BuildException e) { return Fail(e.Message); }
            catch (OperationCanceledException) { return Signals.ExitCode; }
        }
        var sw = Stopwatch.StartNew();
        List<CatalogueRow> rows;
        List<CleanRow> clean;
        try
        {
            (rows, clean) = Catalogue.Run(new CatalogueOptions
            {
                Seeds = seeds, Iterations = iterations, FlushIterations = flushIterations, MaxTest = maxTest,
                KernelIterations = checkers.Contains("kernel") ? kernelIterations : 0, KernelPath = kernel, Threads = threads,
                Bugs = bugs.Length == 0 ? null : bugs, Checkers = checkers.Length == 0 ? null : checkers,
                Progress = m => Console.Error.WriteLine($"catalogue: {m}"), Cancel = ct,
            });
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}");
            return Signals.ExitCode;
        }

        var output = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected) output.Profile.Width = 200;
        var t = new Table().AddColumn("planted bug").AddColumn("checker").AddColumn(new TableColumn("found").RightAligned())
            .AddColumn(new TableColumn("to find (median / max)").RightAligned()).AddColumn(new TableColumn("time to find (median)").RightAligned())
            .AddColumn("replayed").AddColumn(new TableColumn("shrunk insns (median)").RightAligned())
            .Caption($"{seeds} seed(s) per row; program: {iterations} iterations over 100 generated programs; program+flushes: {flushIterations} iterations, 2 flushes each; properties: {maxTest} cases");
        foreach (var r in rows)
            t.AddRow(Markup.Escape(r.Bug), Markup.Escape(r.Checker), r.Found == 0 ? "[grey]0/" + r.Seeds + "[/]" : $"{r.Found}/{r.Seeds}",
                r.Found == 0 ? "-" : $"{r.MedianToFind:F0} / {r.MaxToFind} {r.Unit}", r.MedianSeconds is { } s ? $"{s:F1} s" : "-",
                r.Replayed switch { true => "yes", false => "[red]no[/]", null => "-" }, r.MedianShrunk is { } k ? $"{k:F0}" : "-");
        output.Write(t);
        var c = new Table().Title("the correct translator on the same budgets").AddColumn("checker").AddColumn("setting").AddColumn("budget").AddColumn("result").AddColumn(new TableColumn("time").RightAligned());
        foreach (var r in clean)
            c.AddRow(Markup.Escape(r.Checker), Markup.Escape(r.Setting), r.Budget, r.Clean ? "clean" : $"[red]{Markup.Escape(FirstLine(r.Failure))}[/]", $"{r.Elapsed.TotalSeconds:F1} s");
        output.Write(c);

        var byBug = rows.GroupBy(r => r.Bug).ToList();
        var missed = byBug.Where(g => g.All(r => r.Found == 0)).Select(g => g.Key).ToList();
        var slow = byBug.Where(g => g.Any(r => r.Found > 0) && g.Where(r => r.Found > 0).Min(r => r.MedianSeconds!.Value) >= 10).Select(g => g.Key).ToList();
        Console.WriteLine($"{byBug.Count - missed.Count} of {byBug.Count} planted bugs found by a generic checker" + (missed.Count > 0 ? $" (missed: {string.Join(", ", missed)})" : ""));
        Console.WriteLine(slow.Count == 0 ? "median time to find under 10 s for every found bug (its fastest checker)" : $"median time to find 10 s or more: {string.Join(", ", slow)}");
        Console.WriteLine($"correct translator: {clean.Count(r => r.Clean)} of {clean.Count} budgets clean; {sw.Elapsed.TotalSeconds:F0} s in all");
        return missed.Count == 0 && clean.All(r => r.Clean) && rows.All(r => r.Replayed is not false) ? 0 : 1;
    }

    private static string FirstLine(string? s) => (s ?? "").Split('\n')[0];
}
