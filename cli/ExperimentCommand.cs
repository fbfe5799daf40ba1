using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// `harness experiment`: native against translated across vCPU counts and translator
/// configurations, each cell (configuration, vCPUs, workload) in its own boot: one deterministic
/// run for exact instruction counts, and --repeat free-running runs on real threads for host time
/// and scaling. Writes results.csv (a row per run, flushed as it finishes, so an interrupted
/// experiment keeps its rows), summary.md and plots (ScottPlot) to --out (docs/experiments.md).
/// </summary>
internal static class ExperimentCommand
{
    private static readonly string[] KnownConfigs = ["native", .. Harness.Dbt.DbtOptions.Configurations];
    // Iteration counts (name:ARG) long enough that a free-running run's host time is the
    // workload's, not thread start-up and first translations (the programs' own defaults run for
    // 10-200 ms).
    private static readonly string[] DefaultWorkloads =
        ["null_syscall:100000", "read1:20000", "open_close:5000", "page_fault:4096", "pipe_rtt:5000", "spawn_exit:300", "fileserver-scaled", "httpd-scaled"];

    public static Command Create()
    {
        var configs = new Option<string[]>("--configs") { Description = "translator configurations: native, default, no-callret, drk", AllowMultipleArgumentsPerToken = true };
        var vcpus = new Option<string[]>("--vcpus") { Description = "vCPU counts (1..4), e.g. 1,2,4", AllowMultipleArgumentsPerToken = true };
        var workloads = new Option<string[]>("--workloads") { Description = $"guest workloads: NAME, NAME:ARG (the program's argument: its iteration count), or fileserver-scaled (2 workers per vCPU, a fixed load each) (default: {string.Join(",", DefaultWorkloads)})", AllowMultipleArgumentsPerToken = true };
        var repeat = new Option<int>("--repeat") { Description = "free-running repetitions per cell (host time, spread)", DefaultValueFactory = _ => 3 };
        var output = new Option<DirectoryInfo>("--out") { Description = "where results.csv, summary.md and the plots go", DefaultValueFactory = _ => new DirectoryInfo("experiment") };
        var quick = new Option<bool>("--quick") { Description = "a smoke test: native and default, 1 and 2 vCPUs, null_syscall and pipe_rtt, 1 repetition" };
        var cmd = new Command("experiment", "native vs translated across vCPU counts and configurations: results.csv, summary.md, plots (docs/experiments.md)")
        {
            configs, vcpus, workloads, repeat, output, quick,
        };
        cmd.SetAction((r, ct) =>
        {
            string[] Split(string[]? v) => (v ?? []).SelectMany(x => x.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
            bool q = r.GetValue(quick);
            return Task.FromResult(Run(Split(r.GetValue(configs)) is { Length: > 0 } c ? c : q ? ["native", "default", "drk"] : KnownConfigs,
                Split(r.GetValue(vcpus)) is { Length: > 0 } v ? v : q ? ["1", "2"] : ["1", "2", "4"],
                Split(r.GetValue(workloads)) is { Length: > 0 } w ? w : q ? ["null_syscall", "pipe_rtt"] : DefaultWorkloads,
                q && r.GetResult(repeat) is not { Implicit: false } ? 1 : r.GetValue(repeat), r.GetValue(output)!, ct));
        });
        return cmd;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"harness: {message}");
        Console.Error.WriteLine("harness: see 'harness experiment --help'");
        return ExitCodes.BadInput;
    }

    /// <summary>One run's measurements.</summary>
    private sealed record Row(string Config, int Vcpus, string Workload, string Exec, int Rep, bool Ok, long GuestInsns, long WorkloadTime,
        long? InsnsPerOp, long? Ops, double HostSeconds, long DispatcherEntries, long JumptableMisses)
    {
        /// <summary>Guest instructions executed by all vCPUs during the workload (its first user-mode code to its result line).</summary>
        public long WorkloadInsns { get; init; }
        /// <summary>Host CPU time of the whole process during the workload (every vCPU thread, busy or waiting).</summary>
        public double HostCpuSeconds { get; init; }
        public long CallOuts { get; init; }
        public long GateEntries { get; init; }
        public long SyscallEntries { get; init; }
        public long FramesToNative { get; init; }
        /// <summary>The prof client's counts (exec "prof" only).</summary>
        public Harness.Dbt.Clients.ProfCounts? Prof { get; init; }
    }

    private static readonly string CsvHeader = "config,vcpus,workload,exec,rep,ok,guest_insns,workload_guest_time,workload_insns_all_vcpus,insns_per_op,ops,host_seconds,host_cpu_seconds," +
        "dispatcher_entries,jumptable_misses,call_outs,gate_entries,syscall_entries,frames_to_native,indirect_branches,jumptable_l1_hits,jumptable_hit_rate";

    private static string CsvLine(Row r)
    {
        string I(long? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "";
        return string.Join(',', r.Config, r.Vcpus, r.Workload, r.Exec, r.Rep, r.Ok ? 1 : 0, r.GuestInsns, r.WorkloadTime, r.WorkloadInsns, I(r.InsnsPerOp), I(r.Ops),
            r.HostSeconds.ToString("F4", CultureInfo.InvariantCulture), r.HostCpuSeconds.ToString("F4", CultureInfo.InvariantCulture),
            r.DispatcherEntries, r.JumptableMisses, r.CallOuts, r.GateEntries, r.SyscallEntries, r.FramesToNative,
            I(r.Prof?.IndirectBranches), I(r.Prof?.Level1Hits), r.Prof is { } p ? p.HitRate.ToString("F4", CultureInfo.InvariantCulture) : "");
    }

    /// <summary>
    /// The runs of one cell: a deterministic run for exact counts (two when --repeat is 2 or more, to
    /// show they are identical), a deterministic run with the prof client for the paper's Table 3
    /// (translated configurations, at the first vCPU count only: its snippets change the counts, so
    /// it is kept apart), then the free-running repetitions for host time.
    /// </summary>
    private static IEnumerable<(string Exec, int Rep)> RunsOf(string config, int vcpus, int firstVcpus, int repeat)
    {
        yield return ("deterministic", 0);
        if (repeat >= 2) yield return ("deterministic", 1);
        if (config != "native" && vcpus == firstVcpus) yield return ("prof", 0);
        for (int rep = 1; rep <= repeat; rep++) yield return ("free", rep);
    }

    private static int Run(string[] configs, string[] vcpuArgs, string[] workloads, int repeat, DirectoryInfo outDir, CancellationToken ct)
    {
        if (configs.FirstOrDefault(c => !KnownConfigs.Contains(c)) is { } bad)
            return Fail($"--configs: unknown configuration '{bad}' (known: {string.Join(", ", KnownConfigs)})");
        var vcpus = new List<int>();
        foreach (var v in vcpuArgs)
        {
            if (!int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n is < 1 or > 4) return Fail($"--vcpus: '{v}' is not a vCPU count from 1 to 4");
            vcpus.Add(n);
        }
        if (repeat is < 1 or > 100) return Fail($"--repeat must be between 1 and 100 (got {repeat})");
        string kernel;
        try { kernel = DefaultImage.Ensure(ct, m => Console.Error.WriteLine($"harness: {m}")); }
        catch (DefaultImage.BuildException e) { return Fail(e.Message); }
        catch (OperationCanceledException) { return Signals.ExitCode; }
        byte[] image = File.ReadAllBytes(kernel);
        var kernelImage = Harness.Dbt.Kernel.KernelImage.FromElf(image, kernel);
        using (var probe = new Machine(new MachineOptions { Vcpus = 1, MemoryBytes = 64UL << 20 }))
        {
            probe.LoadElf(image, "kernel.elf");
            if (KernelPrograms.Read(probe, kernelImage) is { } bundled && workloads.Select(ProgramOf).FirstOrDefault(w => !bundled.Contains(w)) is { } unknown)
                return Fail($"--workloads: the kernel has no workload '{unknown}' (bundled: {string.Join(", ", bundled)})");
        }
        string csvPath;
        StreamWriter csv;
        try
        {
            Directory.CreateDirectory(outDir.FullName);
            csvPath = Path.Combine(outDir.FullName, "results.csv");
            csv = new StreamWriter(csvPath, append: false) { AutoFlush = true };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return Fail($"--out: {outDir.FullName}: {e.Message}"); }

        var host = HostInfo();
        csv.WriteLine(CsvHeader);
        // Warm-up, not recorded: the first cell would otherwise pay the JIT for the interpreter and
        // the translator inside its timed part (a short run of the first workload per configuration).
        foreach (var c in configs)
        {
            if (ct.IsCancellationRequested) break;
            Console.Error.WriteLine($"experiment: warm-up: {c}, 1 vCPU, null_syscall:20000");
            RunCell(image, kernelImage, c, 1, "null_syscall:20000", "free", 0, ct);
        }
        var rows = new List<Row>();
        int cells = configs.Length * vcpus.Count * workloads.Length, done = 0;
        var sw = Stopwatch.StartNew();
        bool interrupted = false;
        foreach (var w in workloads)
            foreach (var n in vcpus)
                foreach (var c in configs)
                {
                    done++;
                    foreach (var (exec, rep) in RunsOf(c, n, vcpus[0], repeat))
                    {
                        if (interrupted) break;
                        Console.Error.WriteLine($"experiment: cell {done}/{cells}: {c}, {n} vCPU(s), {w}, {exec}{(exec == "free" ? $" {rep}/{repeat}" : "")} ({sw.Elapsed.TotalSeconds:F0} s)");
                        var row = RunCell(image, kernelImage, c, n, w, exec, rep, ct);
                        if (ct.IsCancellationRequested) { interrupted = true; break; }
                        rows.Add(row);
                        csv.WriteLine(CsvLine(row));
                    }
                }
        csv.Dispose();
        var hostAfter = HostInfo();
        string summary = Summary(rows, configs, vcpus, workloads, repeat, host, hostAfter, sw.Elapsed, interrupted);
        File.WriteAllText(Path.Combine(outDir.FullName, "summary.md"), summary);
        var plots = Plots(rows, configs, vcpus, workloads, outDir.FullName);
        Console.WriteLine(summary);
        Console.WriteLine($"results: {csvPath}; summary: {Path.Combine(outDir.FullName, "summary.md")}; plots: {string.Join(", ", plots)}");
        if (interrupted) { Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}: results.csv keeps the {rows.Count} finished runs"); return Signals.ExitCode; }
        return rows.All(r => r.Ok) ? 0 : 1;
    }

    /// <summary>
    /// The scaled workloads, one row each: the program and its per-unit load. Both programs take
    /// units (file-server workers, or clients each with its own server process) in bits 0-7 and the
    /// load per unit in bits 8-23; two units per vCPU with a fixed load each, so throughput should
    /// grow with the vCPUs (as filebench's does).
    /// </summary>
    private static readonly Dictionary<string, (string Program, int LoadPerUnit)> scaled = new()
    {
        ["fileserver-scaled"] = ("fileserver", 150),   // operations per worker
        ["httpd-scaled"] = ("httpd", 200),             // requests per client
    };

    /// <summary>The workload's program: "name", "name:ARG" (the kernel passes ARG to its main) or a scaled workload's.</summary>
    private static string ProgramOf(string workload) => scaled.TryGetValue(workload, out var s) ? s.Program : workload.Split(':')[0];

    private static string RunArgument(string workload, int vcpus) =>
        scaled.TryGetValue(workload, out var s) ? $"{s.Program}:0x{(s.LoadPerUnit << 8) | Math.Min(16, 2 * vcpus):x}" : workload;

    private static readonly Regex ResultLine = new(@"^result (\S+) (.*)$", RegexOptions.Multiline);
    private static readonly Regex WorkloadLine = new(@"^workload (\S+) exit=(\d+) time=(\d+)", RegexOptions.Multiline);

    private static Row RunCell(byte[] image, Harness.Dbt.Kernel.KernelImage kernel, string config, int vcpus, string workload, string exec, int rep, CancellationToken ct)
    {
        var console = new WorkloadClock();
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 256UL << 20, MaxInstructions = 4_000_000_000, Console = console,
            Control = exec == "free" ? new FreeRunning() : new Deterministic(1000),
            // The self-test is not the experiment: each cell boots straight into its workload.
            CommandLine = $"selftest=0 run={RunArgument(workload, vcpus)}",
        });
        m.LoadElf(image, "kernel.elf");
        Harness.Dbt.KernelDbt? dbt = config == "native" ? null
            : Harness.Dbt.KernelDbt.Attach(m, Harness.Dbt.DbtOptions.Named(config) with { Kernel = kernel, Clients = exec == "prof" ? [Harness.Dbt.Clients.Prof.ClientName] : [] });
        console.Machine = m;
        // The workload's host time: from the first user-mode block (the workload's program starts;
        // boot and its translation are not the experiment) to its `workload` result line.
        m.Attach(new HookAgent { OnBlockDecoded = (v, va, pa) => { if ((long)va >= 0) console.UserModeStarted(); } });
        var r = m.Run(ct);
        string text = Encoding.ASCII.GetString(console.ToArray());
        long? perOp = null, ops = null;
        foreach (Match x in ResultLine.Matches(text))
        {
            var fields = x.Groups[2].Value.Split(' ').Select(f => f.Split('=')).Where(f => f.Length == 2).ToDictionary(f => f[0], f => f[1]);
            if (fields.TryGetValue("insns_per_op", out var p) && long.TryParse(p, out long pv)) perOp ??= pv;
            if ((fields.TryGetValue("ops", out var o) || fields.TryGetValue("iterations", out o)) && long.TryParse(o, out long ov)) ops ??= ov;
        }
        var wl = WorkloadLine.Match(text);
        bool ok = r.Reason == StopReason.Exited && r.ExitStatus == 0 && wl.Success && wl.Groups[2].Value == "0";
        var s = dbt?.Stats;
        return new Row(config, vcpus, workload, exec, rep, ok, r.Vcpus.Sum(v => v.Instructions), wl.Success ? long.Parse(wl.Groups[3].Value) : 0,
            perOp, ops, console.Seconds ?? r.Wall.TotalSeconds, s?.DispatcherEntries ?? 0, s?.IndirectDispatches ?? 0)
        {
            WorkloadInsns = console.Instructions ?? r.Vcpus.Sum(v => v.Instructions),
            HostCpuSeconds = console.CpuSeconds ?? 0,
            CallOuts = s?.CallOuts ?? 0, GateEntries = s?.GateEntries ?? 0, SyscallEntries = s?.SyscallEntries ?? 0, FramesToNative = s?.FramesToNative ?? 0,
            Prof = dbt?.Client<Harness.Dbt.Clients.Prof>()?.Read(),
        };
    }

    /// <summary>
    /// The console, and over the workload (from the first user-mode code to the first `workload `
    /// line): host time, host CPU time of the process, and guest instructions executed by all vCPUs.
    /// </summary>
    private sealed class WorkloadClock : MemoryStream
    {
        private readonly Stopwatch clock = new();
        private long started = -1, ended = -1;
        private int scanned;
        private TimeSpan cpu0, cpu1;
        private long insns0, insns1 = -1;

        public Machine? Machine { get; set; }

        public void UserModeStarted()
        {
            if (Interlocked.CompareExchange(ref started, 0, -1) != -1) return;
            cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            insns0 = Executed();
            clock.Start();
        }

        private long Executed() => Machine?.Vcpus.Sum(v => v.Executed) ?? 0;

        public double? Seconds => ended > 0 ? ended / (double)Stopwatch.Frequency : null;
        public double? CpuSeconds => ended > 0 ? (cpu1 - cpu0).TotalSeconds : null;
        public long? Instructions => insns1 >= 0 ? insns1 - insns0 : null;

        public override void WriteByte(byte value) { base.WriteByte(value); Check(); }

        public override void Write(byte[] buffer, int offset, int count) { base.Write(buffer, offset, count); Check(); }

        private void Check()
        {
            if (ended > 0 || !clock.IsRunning) return;
            var text = Encoding.ASCII.GetString(GetBuffer(), scanned, (int)Length - scanned);
            int nl = text.LastIndexOf('\n');
            if (nl < 0) return;
            if (Regex.IsMatch(text[..nl], @"(^|\n)workload \S+ exit="))
            {
                ended = clock.ElapsedTicks;
                cpu1 = Process.GetCurrentProcess().TotalProcessorTime;
                insns1 = Executed();
            }
            scanned += nl + 1;
        }
    }

    private static (double Median, double Low, double High) Spread(IEnumerable<double> xs)
    {
        var a = xs.Order().ToArray();
        if (a.Length == 0) return (double.NaN, double.NaN, double.NaN);
        double Q(double q) { double pos = q * (a.Length - 1); int i = (int)pos; return i + 1 < a.Length ? a[i] + (a[i + 1] - a[i]) * (pos - i) : a[i]; }
        return (Q(0.5), Q(0.025), Q(0.975));
    }

    private static string Summary(List<Row> rows, string[] configs, List<int> vcpus, string[] workloads, int repeat, string host, string hostAfter, TimeSpan took, bool interrupted)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# harness experiment");
        sb.AppendLine();
        sb.AppendLine($"configs {string.Join(", ", configs)}; vCPUs {string.Join(", ", vcpus)}; workloads {string.Join(", ", workloads)}; {repeat} free-running repetition(s) per cell plus one deterministic run; {took.TotalSeconds:F0} s{(interrupted ? "; INTERRUPTED: partial" : "")}.");
        sb.AppendLine($"host before: {host}; after: {hostAfter}; commit {Commit()}.");
        sb.AppendLine();
        sb.AppendLine("## Overhead: translated over native (guest instructions per operation, deterministic; the workload's host time from its first user-mode code to its result line, median of the free runs [95% interval])");
        sb.AppendLine();
        sb.AppendLine("| workload | vCPUs | config | insns/op | insns/op ratio | host s (median) | host ratio [95%] | dispatcher entries | jumptable misses |");
        sb.AppendLine("|---|---:|---|---:|---:|---:|---:|---:|---:|");
        foreach (var w in workloads)
            foreach (var n in vcpus)
            {
                var nativeDet = rows.FirstOrDefault(r => r.Config == "native" && r.Vcpus == n && r.Workload == w && r.Exec == "deterministic" && r.Rep == 0);
                var nativeFree = rows.Where(r => r.Config == "native" && r.Vcpus == n && r.Workload == w && r.Exec == "free").Select(r => r.HostSeconds).ToList();
                double nativeMedian = Spread(nativeFree).Median;
                foreach (var c in configs)
                {
                    var det = rows.FirstOrDefault(r => r.Config == c && r.Vcpus == n && r.Workload == w && r.Exec == "deterministic" && r.Rep == 0);
                    var free = rows.Where(r => r.Config == c && r.Vcpus == n && r.Workload == w && r.Exec == "free").Select(r => r.HostSeconds).ToList();
                    if (det is null) continue;
                    var (med, lo, hi) = Spread(free);
                    string ratio = det.InsnsPerOp is { } p && nativeDet?.InsnsPerOp is { } np && np > 0 ? $"{(double)p / np:F2}x" : "-";
                    string hostRatio = double.IsNaN(med) || double.IsNaN(nativeMedian) || nativeMedian <= 0 ? "-" : $"{med / nativeMedian:F2}x [{lo / nativeMedian:F2}, {hi / nativeMedian:F2}]";
                    sb.AppendLine($"| {w} | {n} | {c}{(det.Ok ? "" : " (FAILED)")} | {det.InsnsPerOp?.ToString() ?? "-"} | {ratio} | {(double.IsNaN(med) ? "-" : med.ToString("F3"))} | {hostRatio} | {det.DispatcherEntries:N0} | {det.JumptableMisses:N0} |");
                }
            }
        sb.AppendLine();
        sb.AppendLine("## Scaling: operations per host second (median of the free runs) by vCPU count, relative to 1 vCPU");
        sb.AppendLine();
        sb.AppendLine("| workload | config | " + string.Join(" | ", vcpus.Select(n => $"{n} vCPU(s)")) + " |");
        sb.AppendLine("|---|---|" + string.Concat(vcpus.Select(_ => "---:|")));
        foreach (var w in workloads)
            foreach (var c in configs)
            {
                double Throughput(int n) => Spread(rows.Where(r => r.Config == c && r.Vcpus == n && r.Workload == w && r.Exec == "free" && r.Ops is > 0)
                    .Select(r => r.Ops!.Value / r.HostSeconds)).Median;
                double one = Throughput(vcpus[0]);
                sb.AppendLine($"| {w} | {c} | " + string.Join(" | ", vcpus.Select(n => Throughput(n) is var t && !double.IsNaN(t) ? $"{t:F0} ({t / one:F2}x)" : "-")) + " |");
            }
        Table3(sb, rows, configs, vcpus, workloads);
        SystemTime(sb, rows, configs, vcpus, workloads);
        sb.AppendLine();
        // Exact counts: every deterministic run of a cell must give the same numbers.
        var cellsWithTwo = rows.Where(r => r.Exec == "deterministic").GroupBy(r => (r.Config, r.Vcpus, r.Workload)).Where(g => g.Count() > 1).ToList();
        var differing = cellsWithTwo.Where(g => g.Select(r => (r.GuestInsns, r.WorkloadInsns, r.InsnsPerOp, r.DispatcherEntries, r.JumptableMisses)).Distinct().Count() > 1)
            .Select(g => $"{g.Key.Workload} {g.Key.Config} {g.Key.Vcpus} vCPU(s)").ToList();
        sb.AppendLine(cellsWithTwo.Count == 0
            ? "Reproducibility: one deterministic run per cell (--repeat 1); run with --repeat 2 or more to compare two."
            : differing.Count == 0
                ? $"Reproducibility: exact counts (guest instructions, instructions per operation, dispatcher entries, jumptable misses) identical in both deterministic runs of all {cellsWithTwo.Count} cells."
                : $"Reproducibility: exact counts DIFFER between the deterministic runs of {differing.Count} cell(s): {string.Join("; ", differing)}.");
        sb.AppendLine($"Host times vary, hence the intervals. {rows.Count(r => !r.Ok)} of {rows.Count} runs failed.");
        return sb.ToString();
    }

    /// <summary>
    /// The paper's Table 3: what the translator did per operation, from the deterministic prof run
    /// (whole run, boot included: boot is small next to the workloads' iteration counts).
    /// </summary>
    private static void Table3(StringBuilder sb, List<Row> rows, string[] configs, List<int> vcpus, string[] workloads)
    {
        var prof = rows.Where(r => r.Exec == "prof" && r.Prof is not null && r.Ops is > 0).ToList();
        if (prof.Count == 0) return;
        sb.AppendLine();
        sb.AppendLine($"## Table 3: translator counts per operation ({vcpus[0]} vCPU(s), deterministic, prof client; whole run)");
        sb.AppendLine();
        sb.AppendLine("| workload | config | dispatcher entries/op | indirect branches/op | jumptable hit rate (level 1) | hit rate (both levels) | call-outs/op | gate entries/op | syscall entries/op |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var w in workloads)
            foreach (var c in configs)
                if (prof.FirstOrDefault(r => r.Workload == w && r.Config == c) is { } r)
                {
                    var p = r.Prof!.Value;
                    double ops = r.Ops!.Value;
                    sb.AppendLine($"| {w} | {c} | {p.DispatcherEntries / ops:F2} | {p.IndirectBranches / ops:F2} | {p.Level1HitRate:P1} | {p.HitRate:P1} | {r.CallOuts / ops:F2} | {r.GateEntries / ops:F2} | {r.SyscallEntries / ops:F2} |");
                }
    }

    /// <summary>
    /// A system-time-like table per vCPU count: the work of all vCPUs per operation over the workload,
    /// in guest instructions (deterministic, exact) and host CPU time of the process (free runs,
    /// median: busy and waiting vCPU threads alike).
    /// </summary>
    private static void SystemTime(StringBuilder sb, List<Row> rows, string[] configs, List<int> vcpus, string[] workloads)
    {
        foreach (var n in vcpus)
        {
            sb.AppendLine();
            sb.AppendLine($"## System time, {n} vCPU(s): per operation, all vCPUs, over the workload");
            sb.AppendLine();
            sb.AppendLine("| workload | " + string.Join(" | ", configs.Select(c => $"{c} guest insns")) + " | " + string.Join(" | ", configs.Select(c => $"{c} host CPU us")) + " |");
            sb.AppendLine("|---|" + string.Concat(configs.Select(_ => "---:|")) + string.Concat(configs.Select(_ => "---:|")));
            foreach (var w in workloads)
            {
                string Insns(string c) => rows.FirstOrDefault(r => r.Config == c && r.Vcpus == n && r.Workload == w && r.Exec == "deterministic" && r.Rep == 0 && r.Ops is > 0) is { } d
                    ? $"{(double)d.WorkloadInsns / d.Ops!.Value:F0}" : "-";
                string Cpu(string c) => Spread(rows.Where(r => r.Config == c && r.Vcpus == n && r.Workload == w && r.Exec == "free" && r.Ops is > 0)
                    .Select(r => r.HostCpuSeconds / r.Ops!.Value * 1e6)).Median is var m && !double.IsNaN(m) ? $"{m:F2}" : "-";
                sb.AppendLine($"| {w} | " + string.Join(" | ", configs.Select(Insns)) + " | " + string.Join(" | ", configs.Select(Cpu)) + " |");
            }
        }
    }

    private static List<string> Plots(List<Row> rows, string[] configs, List<int> vcpus, string[] workloads, string dir)
    {
        var files = new List<string>();
        foreach (var w in workloads)
        {
            IEnumerable<Row> Free(string c, int n) => rows.Where(r => r.Config == c && r.Vcpus == n && r.Workload == w && r.Exec == "free");
            // Host time over native (the native median of the same vCPU count), translated configurations only.
            files.Add(Plot(dir, $"overhead-{FileSafe(w)}.png", $"{w}: host time over native (median, 95% interval)", "translated / native host time",
                configs.Where(c => c != "native"), vcpus, (c, n) =>
                {
                    double native = Spread(Free("native", n).Select(r => r.HostSeconds)).Median;
                    return native > 0 ? Free(c, n).Select(r => r.HostSeconds / native) : [];
                }));
            files.Add(Plot(dir, $"throughput-{FileSafe(w)}.png", $"{w}: operations per host second (median, 95% interval)", "operations / s",
                configs, vcpus, (c, n) => Free(c, n).Where(r => r.Ops is > 0).Select(r => r.Ops!.Value / r.HostSeconds)));
        }
        return files;
    }

    /// <summary>One line per configuration against vCPUs: the median of samples(config, vCPUs) with its 95% interval as error bars.</summary>
    private static string Plot(string dir, string file, string title, string yLabel, IEnumerable<string> configs, List<int> vcpus,
        Func<string, int, IEnumerable<double>> samples)
    {
        var plt = new ScottPlot.Plot();
        foreach (var c in configs)
        {
            var points = vcpus.Select(n => (N: n, S: Spread(samples(c, n)))).Where(p => !double.IsNaN(p.S.Median)).ToArray();
            if (points.Length == 0) continue;
            double[] xs = points.Select(p => (double)p.N).ToArray(), ys = points.Select(p => p.S.Median).ToArray();
            var line = plt.Add.Scatter(xs, ys);
            line.LegendText = c;
            var eb = plt.Add.ErrorBar(xs, ys, points.Select(p => p.S.High - p.S.Median).ToArray());
            eb.YErrorNegative = points.Select(p => p.S.Median - p.S.Low).ToArray();
            eb.Color = line.Color;
        }
        plt.Title(title);
        plt.XLabel("vCPUs");
        plt.YLabel(yLabel);
        // Ticks at the vCPU counts only; the legend beside the plot, where it hides no point.
        plt.Axes.Bottom.SetTicks(vcpus.Select(n => (double)n).ToArray(), vcpus.Select(n => n.ToString(CultureInfo.InvariantCulture)).ToArray());
        plt.Axes.SetLimitsX(vcpus.Min() - 0.3, vcpus.Max() + 0.3);
        plt.ShowLegend(ScottPlot.Edge.Right);
        string path = Path.Combine(dir, file);
        plt.SavePng(path, 800, 500);
        return path;
    }

    private static string FileSafe(string w) => w.Replace(':', '-');

    private static string HostInfo()
    {
        string load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";
        return $"{Environment.ProcessorCount} cores, load {load}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}";
    }

    private static string Commit()
    {
        try
        {
            var p = Process.Start(new ProcessStartInfo("git", ["rev-parse", "--short", "HEAD"]) { RedirectStandardOutput = true, RedirectStandardError = true });
            string s = p!.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 ? s : "unknown";
        }
        catch (System.ComponentModel.Win32Exception) { return "unknown (no git)"; }
    }
}
