using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace Harness.Benchmarks;

/// <summary>
/// Shared configuration. Each emulated operation is a whole guest run (~0.5-1 s at N = 800), so the
/// jobs use a fixed, small number of iterations (one invocation each: the machine is created in
/// [IterationSetup]). --quick (Program.cs) switches to a dry run with a tiny N.
/// </summary>
public class BenchConfig : ManualConfig
{
    public static bool Quick { get; set; }

    public BenchConfig() : this(seams: false) { }

    protected BenchConfig(bool seams)
    {
        var baseJob = Quick
            ? Job.Dry.WithLaunchCount(1).WithWarmupCount(0).WithIterationCount(1)
            : Job.Default.WithLaunchCount(1).WithWarmupCount(2).WithIterationCount(seams ? 15 : 10);
        baseJob = baseJob.WithStrategy(Quick ? RunStrategy.ColdStart : RunStrategy.Monitoring)
                         .WithGcServer(false).WithGcConcurrent(false);
        if (seams)
        {
            AddJob(baseJob.WithId(SeamsCost.SeamsJob).WithCustomBuildConfiguration("ReleaseSeams")
                .WithArguments([new MsBuildArgument("/p:DefineConstants=SEAMS_BASELINE"), new MsBuildArgument("/p:Optimize=true")])
                .AsBaseline());
            AddJob(baseJob.WithId(SeamsCost.NoSeamsJob).WithCustomBuildConfiguration("ReleaseNoSeams")
                .WithArguments([new MsBuildArgument("/p:DefineConstants=NO_SEAMS"), new MsBuildArgument("/p:Optimize=true")]));
            AddColumn(new SeamsPointsColumn());
        }
        else
        {
            // --quick: run in-process (no per-suite project build); the real runs use separate processes.
            AddJob(Quick ? baseJob.WithId("Quick").WithToolchain(InProcessEmitToolchain.Instance) : baseJob.WithId("Compute"));
        }
        AddColumn(new GuestMipsColumn(), new ScalingColumn());
        AddColumnProvider(DefaultColumnProviders.Instance);
        AddLogger(BenchmarkDotNet.Loggers.ConsoleLogger.Default);
        AddExporter(BenchmarkDotNet.Exporters.MarkdownExporter.GitHub);
        // Sequential builds: the two SeamsCost builds compile Machine.Smp with different symbols.
        WithOptions(ConfigOptions.DisableParallelBuild);
        WithSummaryStyle(SummaryStyle.Default.WithRatioStyle(RatioStyle.Value));
    }
}

/// <summary>Retired guest instructions (recorded by the benchmark's child process) / mean time.</summary>
public sealed class GuestMipsColumn : IColumn
{
    public string Id => "GuestMips";
    public string ColumnName => "Guest MIPS";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Retired guest instructions (all vCPUs) per second of wall time, in millions";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public static long? Instructions(BenchmarkCase c)
    {
        string type = c.Descriptor.Type.Name, method = c.Descriptor.WorkloadMethod.Name;
        string? s = type switch
        {
            nameof(InterpreterThroughput) when method != nameof(InterpreterThroughput.Native) => ComputeGuest.Recorded($"insns-{type}-{method}"),
            nameof(TwoVcpuScaling) => ComputeGuest.Recorded($"insns-{type}-{c.Parameters["Vcpus"]}"),
            nameof(SeamsCost) => ComputeGuest.Recorded($"insns-{type}-{c.Job.Id}"),
            nameof(KernelDbt) => ComputeGuest.Recorded($"insns-{type}-{method}"),
            _ => null,
        };
        return s?.Split(',').Sum(long.Parse);
    }

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var stats = summary[benchmarkCase]?.ResultStatistics;
        long? n = Instructions(benchmarkCase);
        if (stats is null || n is null) return "-";
        return (n.Value / (stats.Mean / 1e9) / 1e6).ToString("F1");
    }
}

/// <summary>TwoVcpuScaling: aggregate throughput relative to 1 vCPU (Vcpus * mean(1) / mean(this)).</summary>
public sealed class ScalingColumn : IColumn
{
    public string Id => "Scaling";
    public string ColumnName => "Scaling";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 1;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Aggregate work(N) throughput relative to 1 vCPU (ideal = vCPU count)";
    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(c => c.Descriptor.Type == typeof(TwoVcpuScaling));
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public static double? Scaling(Summary summary, BenchmarkCase c)
    {
        if (c.Descriptor.Type != typeof(TwoVcpuScaling)) return null;
        var one = summary.BenchmarksCases.FirstOrDefault(x => x.Descriptor.Type == typeof(TwoVcpuScaling) && (int)x.Parameters["Vcpus"] == 1);
        var s1 = one is null ? null : summary[one]?.ResultStatistics;
        var s = summary[c]?.ResultStatistics;
        if (s1 is null || s is null) return null;
        return (int)c.Parameters["Vcpus"] * s1.Mean / s.Mean;
    }

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) =>
        Scaling(summary, benchmarkCase)?.ToString("F2") ?? "-";
}

/// <summary>SeamsCost: what the job's child process compiled: Seams.Points const (NO_SEAMS) or static readonly.</summary>
public sealed class SeamsPointsColumn : IColumn
{
    public string Id => "SeamsPoints";
    public string ColumnName => "Seams.Points";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 2;
    public bool IsNumeric => false;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "How the benchmark process's Machine.Smp compiled Seams.Points (FieldInfo.IsLiteral)";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        if (benchmarkCase.Descriptor.Type != typeof(SeamsCost)) return "-";
        bool wantConst = benchmarkCase.Job.Id == SeamsCost.NoSeamsJob;
        string kind = wantConst ? "const" : "readonly";
        return ComputeGuest.Recorded($"seams-points-{kind}") is not null ? kind : $"NOT {kind}?";
    }
}
