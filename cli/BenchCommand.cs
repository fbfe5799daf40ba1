using System.CommandLine;
using System.Globalization;
using Harness.Dbt.Reports;
using Harness.Smp.Boot;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// `harness bench dbt`: the guest kernel's measured workloads natively and under both DBT
/// configurations, with exact guest instruction counts (deterministic execution) and host times of
/// the same runs side by side; then the whole-kernel translation and the goals (docs/performance.md).
/// The tables go to stdout, progress to stderr.
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var vcpus = new Option<int>("--vcpus") { Description = "vCPUs of every run (1..64)", DefaultValueFactory = _ => 1 };
        var quick = new Option<bool>("--quick") { Description = $"smoke run: {string.Join(", ", KernelWorkloads.Quick)}, one steady-state pass (not a measurement)" };
        var workload = new Option<string[]>("--workload")
        {
            Description = $"measure only these workloads (repeat or comma-separate): {string.Join(", ", KernelWorkloads.Measured)}",
            AllowMultipleArgumentsPerToken = true,
        };
        var kernel = new Option<FileInfo?>("--kernel") { Description = "guest kernel image (default: the bundled kernel, built if needed)" };
        var dbt = new Command("dbt", "guest instructions per operation natively, translated (default) and no-callret; dispatcher entries in steady state; host time; whole-kernel translation; goals")
        {
            vcpus, quick, workload, kernel,
        };
        dbt.SetAction((r, ct) => Task.FromResult(RunDbt(r.GetValue(vcpus), r.GetValue(quick), r.GetValue(workload) ?? [], r.GetValue(kernel), ct)));
        var iterations = new Option<ulong>("--iterations") { Description = "rounds of work() per vCPU (default 2150: about 200 M guest instructions on 1 vCPU)", DefaultValueFactory = _ => 2150 };
        var repeat = new Option<int>("--repeat") { Description = "runs of each configuration (the fastest counts; 1..20)", DefaultValueFactory = _ => 3 };
        var quickCompute = new Option<bool>("--quick") { Description = "smoke run: 40 rounds, one repeat (not a measurement)" };
        var compute = new Command("compute", "the compute guest interpreted and compiled against the same C run natively: whole-run and steady-state MIPS, 2-vCPU scaling, goals")
        {
            iterations, repeat, quickCompute,
        };
        compute.SetAction((r, ct) =>
        {
            bool q = r.GetValue(quickCompute);
            int rep = r.GetValue(repeat);
            ulong n = r.GetValue(iterations);
            if (rep is < 1 or > 20) { Console.Error.WriteLine($"harness: --repeat must be between 1 and 20 (got {rep})"); return Task.FromResult(ExitCodes.BadInput); }
            if (n is < 1 or > 1_000_000) { Console.Error.WriteLine($"harness: --iterations must be between 1 and 1000000 (got {n})"); return Task.FromResult(ExitCodes.BadInput); }
            return Task.FromResult(BenchCompute.Run(new BenchCompute.Settings(q ? 40 : n, q ? 1 : rep, q), ct));
        });
        var bench = new Command("bench", "benchmarks of the machine and the translator (see docs/performance.md)") { dbt, compute };
        return bench;
    }

    private static int RunDbt(int vcpus, bool quick, string[] workloads, FileInfo? kernel, CancellationToken ct)
    {
        var names = workloads.SelectMany(w => w.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Distinct().ToList();
        string? unknown = names.FirstOrDefault(n => !KernelWorkloads.Measured.Contains(n));
        string? error = vcpus < 1 || vcpus > BootLayout.MaxCpus ? $"--vcpus must be between 1 and {BootLayout.MaxCpus} (got {vcpus})"
            : unknown is not null ? $"--workload: '{unknown}' is not a measured workload (one of {string.Join(", ", KernelWorkloads.Measured)})"
            : kernel is not null && Directory.Exists(kernel.FullName) ? $"--kernel: {kernel.FullName} is a directory, not an ELF image"
            : kernel is { Exists: false } ? $"kernel image not found: {kernel.FullName}"
            : null;
        if (error is not null) { Console.Error.WriteLine($"harness: {error}"); return ExitCodes.BadInput; }
        string path;
        try { path = kernel?.FullName ?? DefaultImage.Ensure(ct, line => Console.Error.WriteLine($"harness: {line}")); }
        catch (DefaultImage.BuildException e) { Console.Error.WriteLine($"harness: {e.Message}"); return ExitCodes.BadInput; }
        catch (OperationCanceledException) { Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}"); return Signals.ExitCode; }

        var settings = new DbtBenchSettings { Vcpus = vcpus, Quick = quick, Workloads = names.Count > 0 ? names : null };
        DbtBenchReport report;
        // The image is checked (ELF, symbols, bundled workloads) before the first of the bench's boots.
        try { DbtBenchReport.Preflight(File.ReadAllBytes(path), path); }
        catch (Exception e) when (e is FormatException or ImageException) { Console.Error.WriteLine($"harness: bad kernel image: {e.Message}"); return ExitCodes.BadInput; }
        try { report = WithProgress(p => DbtBenchReport.Run(path, settings, p, ct)); }
        catch (OperationCanceledException) { Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}"); return Signals.ExitCode; }
        catch (FormatException e) { Console.Error.WriteLine($"harness: bad kernel image: {e.Message}"); return ExitCodes.BadInput; }
        catch (ImageException e) { Console.Error.WriteLine($"harness: bad kernel image: {e.Message}"); return ExitCodes.BadInput; }

        var output = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        // Redirected output gets Spectre's 80 columns, too narrow for these tables.
        if (Console.IsOutputRedirected) output.Profile.Width = 160;
        Print(output, report);
        var errors = report.Errors.ToList();
        foreach (var e in errors) Console.Error.WriteLine($"harness: {e}");
        return errors.Count == 0 ? 0 : 1;
    }

    /// <summary>A Spectre progress bar on an interactive stderr, one line per step otherwise (logs, CI, tests).</summary>
    private static T WithProgress<T>(Func<IProgress<BenchProgress>, T> work)
    {
        var err = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        if (Console.IsErrorRedirected || !err.Profile.Capabilities.Interactive)
            return work(new Sync(p => { if (p.Step != "done") Console.Error.WriteLine($"bench: [{p.Done + 1}/{p.Total}] {p.Step}"); }));
        return err.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("bench dbt", maxValue: 1);
                return work(new Sync(p =>
                {
                    task.MaxValue = p.Total;
                    task.Value = p.Done;
                    task.Description = Markup.Escape(p.Step);
                }));
            });
    }

    // Progress<T> would post to the thread pool; the bench reports from its own thread and wants it drawn now.
    private sealed class Sync(Action<BenchProgress> report) : IProgress<BenchProgress>
    {
        public void Report(BenchProgress value) => report(value);
    }

    private static string Ratio(double r, double limit) =>
        double.IsNaN(r) ? "-" : r <= limit ? $"[green]{r:F3}[/]" : $"[red]{r:F3}[/]";

    private static void Print(IAnsiConsole console, DbtBenchReport r)
    {
        var s = r.Settings;
        string steady = s.EffectivePasses == WorkloadRun.WarmUpPasses + 1 ? $"pass {s.EffectivePasses}" : $"passes {WorkloadRun.WarmUpPasses + 1}-{s.EffectivePasses}";
        console.MarkupLine($"[bold]harness bench dbt[/]{(s.Quick ? " [yellow](QUICK: a smoke run, not a measurement)[/]" : "")}: {Markup.Escape(r.KernelPath)}, " +
                           $"{s.Vcpus} vCPU{(s.Vcpus == 1 ? "" : "s")}, deterministic (quantum {KernelBench.Quantum}); each workload in its own boot, " +
                           $"run {s.EffectivePasses} times{(s.EffectiveRepeats > 1 ? $" (each boot {s.EffectiveRepeats} times; wall = the fastest)" : "")}: passes 1-{WorkloadRun.WarmUpPasses} warm up, steady state = {steady}, insns/op of pass {s.EffectivePasses}");
        console.WriteLine();

        var t = new Table().Title("guest instructions per operation (exact; guest rdtsc = retired instructions)")
            .AddColumn("workload").AddColumn(new TableColumn("native").RightAligned())
            .AddColumn(new TableColumn("default").RightAligned()).AddColumn(new TableColumn("ratio").RightAligned())
            .AddColumn(new TableColumn("no-callret").RightAligned()).AddColumn(new TableColumn("ratio").RightAligned())
            .AddColumn(new TableColumn("/1M d").RightAligned()).AddColumn(new TableColumn("/1M n").RightAligned())
            .AddColumn(new TableColumn("warm-up d/n").RightAligned())
            .Caption("/1M d, /1M n: dispatcher entries per 1M guest instructions in steady state, default and no-callret; " +
                     "warm-up d/n: dispatcher entries from boot to the end of pass 2");
        foreach (var row in r.Rows)
            t.AddRow(row.Workload, N(row.Native), N(row.Default), Ratio(row.DefaultRatio, DbtBenchReport.MaxOverhead), N(row.NoCallRet),
                Ratio(row.NoCallRetRatio, DbtBenchReport.MaxOverhead), F(row.DefaultEntriesPerMillion), F(row.NoCallRetEntriesPerMillion),
                $"{row.DefaultWarmUpEntries:N0}/{row.NoCallRetWarmUpEntries:N0}");
        t.AddEmptyRow();
        t.AddRow("[bold]geometric mean[/]", "", "", Ratio(r.GeomeanDefault, DbtBenchReport.MaxGeomean), "", Ratio(r.GeomeanNoCallRet, DbtBenchReport.MaxGeomean), "", "", "");
        console.Write(t);
        console.WriteLine();

        var h = new Table().Title($"host time of the same runs (whole boots; steady = {steady}) with exact guest instructions")
            .AddColumn("configuration").AddColumn(new TableColumn("guest insns").RightAligned()).AddColumn(new TableColumn("wall").RightAligned())
            .AddColumn(new TableColumn("ratio").RightAligned()).AddColumn(new TableColumn("in dispatcher").RightAligned())
            .AddColumn(new TableColumn("decodes").RightAligned()).AddColumn(new TableColumn("steady insns").RightAligned())
            .AddColumn(new TableColumn("steady wall").RightAligned()).AddColumn(new TableColumn("ratio").RightAligned())
            .AddColumn(new TableColumn("MIPS").RightAligned()).AddColumn(new TableColumn("steady entries").RightAligned())
            .AddColumn(new TableColumn("/1M insns").RightAligned());
        h.Caption("in dispatcher: host time translating, chaining and filling jumptables; decodes: blocks the interpreter decoded " +
                  "(every code-cache write invalidates the decoded code of its page); MIPS: steady guest insns per second");
        foreach (var x in r.Host)
            h.AddRow(x.Configuration, N(x.Instructions), Ms(x.Wall), Ratio(r.HostRatio(x.Configuration, false), DbtBenchReport.MaxHostRatio),
                x.Configuration == "off" ? "-" : Ms(x.DispatcherTime), N(x.BlocksDecoded),
                N(x.SteadyInstructions), Ms(x.SteadyWall), Ratio(r.HostRatio(x.Configuration, true), DbtBenchReport.MaxHostRatio),
                x.SteadyWall.TotalSeconds > 0 ? (x.SteadyInstructions / x.SteadyWall.TotalSeconds / 1e6).ToString("F1", CultureInfo.InvariantCulture) : "-",
                x.Configuration == "off" ? "-" : N(x.SteadyEntries), x.Configuration == "off" ? "-" : F(x.SteadyEntriesPerMillion));
        console.Write(h);
        console.WriteLine();

        var w = r.Translation;
        var g = new Table().Title($"whole-kernel translation ({w.Configuration}, static: every gate, function and direct branch target, nothing run)")
            .AddColumn("measure").AddColumn(new TableColumn("value").RightAligned());
        g.AddRow("functions translated", $"{w.FunctionsTranslated} of {w.Functions}");
        g.AddRow("interrupt gates (entry mode)", w.Gates.ToString(CultureInfo.InvariantCulture));
        g.AddRow("blocks (entry mode)", $"{w.Blocks:N0} ({w.EntryBlocks:N0})");
        g.AddRow("native instructions / bytes", $"{w.NativeInstructions:N0} / {w.NativeBytes:N0}");
        g.AddRow("cache bytes (expansion)", $"{w.CacheBytes:N0} (x{w.Expansion:F2})");
        g.AddRow("edge stubs (bytes; to translated code; call-outs)", $"{w.EdgeStubs:N0} ({w.EdgeStubBytes:N0}; {w.EdgesToTranslatedCode:N0}; {w.CallOutStubs:N0})");
        g.AddRow("function bytes covered (of text)", $"{w.CoveredBytes:N0} of {w.FunctionBytes:N0} = {w.Coverage:P1} ({w.TextBytes:N0})");
        g.AddRow("duplication (native bytes / covered)", $"x{w.Duplication:F2}");
        g.AddRow("exception-table registrations", w.ExceptionTableEntries.ToString(CultureInfo.InvariantCulture));
        g.AddRow("untranslatable", w.Untranslatable.Count == 0 ? "none" : Markup.Escape(string.Join("; ", w.Untranslatable.Select(u => $"{u.Where}: {u.Why}"))));
        g.AddRow("native instructions per rule", Markup.Escape(string.Join(", ", w.RuleCounts.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value:N0}"))));
        console.Write(g);
        console.WriteLine();

        var goals = new Table().Title("goals (reported, not asserted)").AddColumn("goal").AddColumn("target").AddColumn("measured").AddColumn("met");
        foreach (var goal in r.Goals)
            goals.AddRow(Markup.Escape(goal.Name), Markup.Escape(goal.Target), Markup.Escape(goal.Measured), goal.Met ? "[green]yes[/]" : "[red]NO[/]");
        console.Write(goals);
        if (r.Settings.Vcpus > 1)
            console.MarkupLine(Markup.Escape($"The goals are set for 1 vCPU. On {r.Settings.Vcpus} vCPUs, each vCPU fills its own jumptable as processes migrate, " +
                "and instructions per operation depend on where timer ticks land (docs/performance.md)."));
    }

    private static string N(long v) => v.ToString("N0", CultureInfo.InvariantCulture);
    private static string F(double v) => v.ToString("F3", CultureInfo.InvariantCulture);
    private static string Ms(TimeSpan t) => $"{t.TotalMilliseconds.ToString("N0", CultureInfo.InvariantCulture)} ms";
}
