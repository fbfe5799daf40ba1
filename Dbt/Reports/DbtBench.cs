namespace Harness.Dbt.Reports;

public sealed record DbtBenchSettings
{
    public int Vcpus { get; init; } = 1;
    public bool Quick { get; init; }
    /// <summary>null: <see cref="KernelWorkloads.Measured"/> (or <see cref="KernelWorkloads.Quick"/> when Quick).</summary>
    public IReadOnlyList<string>? Workloads { get; init; }
    /// <summary>Passes of each workload per boot: two warm up (<see cref="WorkloadRun.Steady"/>), the rest are steady state. null: 3 when Quick, else 5.</summary>
    public int? Passes { get; init; }

    public IReadOnlyList<string> EffectiveWorkloads => Workloads ?? (Quick ? KernelWorkloads.Quick : KernelWorkloads.Measured);
    public int EffectivePasses => Passes ?? (Quick ? 3 : 6);
    /// <summary>Boots of each (workload, configuration); host time is the fastest of them. null: 1 when Quick, else 3.</summary>
    public int? Repeats { get; init; }
    public int EffectiveRepeats => Repeats ?? (Quick ? 1 : 3);
}

public sealed record BenchProgress(int Done, int Total, string Step);

/// <summary>One workload's steady-state guest instructions per operation under each configuration.</summary>
public sealed record BenchRow(string Workload, long Native, long Default, long NoCallRet,
    double DefaultEntriesPerMillion, double NoCallRetEntriesPerMillion, long DefaultWarmUpEntries, long NoCallRetWarmUpEntries)
{
    public double DefaultRatio => (double)Default / Native;
    public double NoCallRetRatio => (double)NoCallRet / Native;
}

/// <summary>Host wall time and exact guest instructions of one configuration, summed over its runs.</summary>
public sealed record HostTime(string Configuration, long Instructions, TimeSpan Wall, long SteadyInstructions, TimeSpan SteadyWall, long SteadyEntries,
    TimeSpan DispatcherTime, long BlocksDecoded)
{
    public double SteadyEntriesPerMillion => SteadyInstructions == 0 ? 0 : SteadyEntries * 1e6 / SteadyInstructions;
}

public sealed record BenchGoal(string Name, string Target, string Measured, bool Met);

/// <summary>
/// `harness bench dbt`: every measured workload natively and under both DBT configurations (see
/// <see cref="KernelBench"/>), compared on the steady-state pass; host time of the same runs side by
/// side (the configurations of one workload run back to back, after a warm-up of the host's JIT);
/// the whole-kernel translation; and the milestone's goals, reported as met or not, never asserted.
/// </summary>
public sealed class DbtBenchReport
{
    public const double MaxOverhead = 1.15, MaxGeomean = 1.05, MaxSteadyEntriesPerMillion = 1.0, MaxHostRatio = 1.3, VisiblyWorse = 1.10;

    public required DbtBenchSettings Settings { get; init; }
    public required IReadOnlyList<WorkloadRun> Runs { get; init; }
    public required WholeImageReport Translation { get; init; }
    public required string KernelPath { get; init; }

    public WorkloadRun Get(string workload, string configuration) => Runs.Single(r => r.Workload == workload && r.Configuration == configuration && r.Repeat == 0);

    /// <summary>Runs that failed or whose results differ from the native run's.</summary>
    public IEnumerable<string> Errors
    {
        get
        {
            foreach (var r in Runs)
            {
                if (r.Error is not null) yield return $"{r.Workload} {r.Configuration}: {r.Error}";
                else if (r.Configuration != "off" && Get(r.Workload, "off") is { Error: null } n && !n.Results.SequenceEqual(r.Results))
                    yield return $"{r.Workload} {r.Configuration}: results differ from native ({string.Join("; ", r.Results.Except(n.Results))})";
                else if (r.Repeat > 0 && Get(r.Workload, r.Configuration) is { Error: null } first
                         && (first.Result.TotalInstructions != r.Result.TotalInstructions || !first.InsnsPerOp.SequenceEqual(r.InsnsPerOp)))
                    yield return $"{r.Workload} {r.Configuration}: repeat {r.Repeat} is not reproducible ({r.Result.TotalInstructions:N0} guest instructions, the first run {first.Result.TotalInstructions:N0})";
            }
        }
    }

    public IReadOnlyList<BenchRow> Rows => Settings.EffectiveWorkloads
        .Where(w => KernelWorkloads.Configurations.All(c => Get(w, c) is { Error: null, SteadyInsnsPerOp: not null }))
        .Select(w =>
        {
            WorkloadRun n = Get(w, "off"), d = Get(w, "default"), c = Get(w, "no-callret");
            return new BenchRow(w, n.SteadyInsnsPerOp!.Value, d.SteadyInsnsPerOp!.Value, c.SteadyInsnsPerOp!.Value,
                PerMillion(d.Steady), PerMillion(c.Steady), d.WarmUp.DispatcherEntries, c.WarmUp.DispatcherEntries);
        }).ToList();

    private static double PerMillion(BenchMark m) => m.Instructions == 0 ? 0 : m.DispatcherEntries * 1e6 / m.Instructions;

    public double GeomeanDefault => Geomean(Rows.Select(r => r.DefaultRatio));
    public double GeomeanNoCallRet => Geomean(Rows.Select(r => r.NoCallRetRatio));

    private static double Geomean(IEnumerable<double> xs)
    {
        var l = xs.ToList();
        return l.Count == 0 ? double.NaN : Math.Exp(l.Average(Math.Log));
    }

    /// <summary>Per configuration: exact counts of the first repetition, wall times the fastest repetition's (noise only ever adds time).</summary>
    public IReadOnlyList<HostTime> Host => KernelWorkloads.Configurations.Select(c =>
    {
        var rs = Runs.Where(r => r.Configuration == c && r.Error is null).GroupBy(r => r.Workload).ToList();
        return new HostTime(c, rs.Sum(g => g.First().Result.TotalInstructions), TimeSpan.FromTicks(rs.Sum(g => g.Min(r => r.Result.Wall.Ticks))),
            rs.Sum(g => g.First().Steady.Instructions), TimeSpan.FromTicks(rs.Sum(g => g.Min(r => r.Steady.Wall.Ticks))), rs.Sum(g => g.First().Steady.DispatcherEntries),
            TimeSpan.FromTicks(rs.Sum(g => g.Min(r => r.DispatcherTime.Ticks))), rs.Sum(g => g.First().BlocksDecoded));
    }).ToList();

    public double HostRatio(string configuration, bool steady)
    {
        var n = Host.Single(h => h.Configuration == "off");
        var c = Host.Single(h => h.Configuration == configuration);
        return steady ? c.SteadyWall / n.SteadyWall : c.Wall / n.Wall;
    }

    public IReadOnlyList<BenchGoal> Goals
    {
        get
        {
            var rows = Rows;
            var worst = rows.MaxBy(r => r.DefaultRatio);
            var defaultHost = Host.Single(h => h.Configuration == "default");
            double hostRatio = HostRatio("default", steady: false);
            var faster = rows.Where(r => r.NoCallRet < r.Default).Select(r => r.Workload).ToList();
            return
            [
                new("default overhead, every workload", $"<= {MaxOverhead:F2}x",
                    worst is null ? "-" : $"worst {worst.DefaultRatio:F3}x ({worst.Workload}); over: {string.Join(", ", rows.Where(r => r.DefaultRatio > MaxOverhead).Select(r => $"{r.Workload} {r.DefaultRatio:F3}x").DefaultIfEmpty("none"))}",
                    worst is not null && worst.DefaultRatio <= MaxOverhead),
                new("default overhead, geometric mean", $"<= {MaxGeomean:F2}x", $"{GeomeanDefault:F4}x", GeomeanDefault <= MaxGeomean),
                new("no-callret visibly worse", $"geomean >= {VisiblyWorse:F2} x default's, no workload faster",
                    $"{GeomeanNoCallRet:F3}x vs {GeomeanDefault:F3}x ({GeomeanNoCallRet / GeomeanDefault:F3}); faster: {(faster.Count == 0 ? "none" : string.Join(", ", faster))}",
                    GeomeanNoCallRet >= VisiblyWorse * GeomeanDefault && faster.Count == 0),
                new("default dispatcher entries, steady state", $"< {MaxSteadyEntriesPerMillion:F0} per 1M guest insns",
                    $"{defaultHost.SteadyEntriesPerMillion:F3} per 1M ({defaultHost.SteadyEntries:N0} in {defaultHost.SteadyInstructions:N0} insns)",
                    defaultHost.SteadyEntriesPerMillion < MaxSteadyEntriesPerMillion),
                new("host time, default vs native (whole runs)", $"<= {MaxHostRatio:F1}x", $"{hostRatio:F2}x (steady-state passes {HostRatio("default", steady: true):F2}x)",
                    hostRatio <= MaxHostRatio),
            ];
        }
    }

    /// <summary>Runs everything: JIT warm-up, each workload under each configuration, the whole-kernel translation.</summary>
    /// <summary>
    /// What the last step (the whole-kernel translation) and the DBT need from the image, checked
    /// before the first of the bench's many boots: a bootable ELF, a symbol table, and the bundled
    /// workloads. A FormatException or ImageException names the file.
    /// </summary>
    public static void Preflight(byte[] elf, string kernelPath)
    {
        Smp.Boot.ElfLoader.Parse(elf, kernelPath);
        var symbols = KernelSymbols.FromElf(elf, kernelPath);
        foreach (var needed in new[] { "programs", "program_count", "thread_list" })
            if (symbols.Address(needed) is null)
                throw new FormatException($"{kernelPath}: no symbol '{needed}': not the harness's guest kernel (bench dbt boots guest/kernel and runs its bundled workloads)");
    }

    public static DbtBenchReport Run(string kernelPath, DbtBenchSettings settings, IProgress<BenchProgress>? progress = null, CancellationToken cancel = default)
    {
        var elf = File.ReadAllBytes(kernelPath);
        Preflight(elf, kernelPath);
        var workloads = settings.EffectiveWorkloads;
        int repeats = settings.EffectiveRepeats;
        int total = KernelWorkloads.Configurations.Count * (workloads.Count * repeats + 1) + 1, done = 0;
        void Step(string what) => progress?.Report(new BenchProgress(done, total, what));

        // The host's JIT compiles the interpreter and the dispatcher during the first runs: one short
        // run per configuration first, so host times compare warm code with warm code.
        foreach (var c in KernelWorkloads.Configurations)
        {
            Step($"warm-up {c}");
            KernelBench.Run(elf, c, "null_syscall", 1, 1, cancel, kernelPath);
            done++;
            cancel.ThrowIfCancellationRequested();
        }
        var runs = new List<WorkloadRun>();
        // The configurations of a workload run back to back, so that a change of load on the host
        // during the bench hits them alike.
        foreach (var w in workloads)
            for (int repeat = 0; repeat < repeats; repeat++)
                foreach (var c in KernelWorkloads.Configurations)
                {
                    Step($"{w} {c}{(repeats > 1 ? $" ({repeat + 1}/{repeats})" : "")}");
                    runs.Add(KernelBench.Run(elf, c, w, settings.Vcpus, settings.EffectivePasses, cancel, kernelPath) with { Repeat = repeat });
                    done++;
                    cancel.ThrowIfCancellationRequested();
                }
        Step("whole-kernel translation");
        var translation = WholeImageTranslation.Translate(elf, kernelPath, DbtOptions.Default);
        done++;
        Step("done");
        return new DbtBenchReport { Settings = settings, Runs = runs, Translation = translation, KernelPath = kernelPath };
    }
}
