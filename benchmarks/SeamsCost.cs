using Harness.Smp;
using BenchmarkDotNet.Attributes;
using Harness.Smp.Control;

namespace Harness.Benchmarks;

/// <summary>
/// Cost of the test seams in a free-running machine: the same 1-vCPU compute run, built two ways.
///   "Seams"   the normal build: Seams.Points is a static readonly bool (false), which the JIT folds.
///   "NoSeams" Machine.Smp rebuilt with NO_SEAMS: Seams.Points is a const, the seam calls are gone.
/// Both jobs build in their own configuration directory (bin/obj/ReleaseSeams, ReleaseNoSeams) so the
/// NO_SEAMS build never overwrites the normal Release output, and both get the same global
/// properties except the one symbol (/p:DefineConstants replaces the SDK's TRACE;RELEASE;NET...,
/// which Machine.Smp does not use). Goal: NoSeams within 3% of Seams.
/// The column "Seams.Points" shows what each job's child process actually compiled (const or readonly).
/// </summary>
[Config(typeof(SeamsConfig))]
public class SeamsCost
{
    public const string SeamsJob = "Seams", NoSeamsJob = "NoSeams";

    private ulong iterations;
    private ulong[] expected = [];
    private Machine? machine;

    public static bool PointsIsConst => typeof(Seams).GetField(nameof(Seams.Points))!.IsLiteral;

    [GlobalSetup]
    public void Setup()
    {
        iterations = ComputeGuest.Iterations;
        expected = ComputeGuest.Expected(1, iterations);
        string kind = PointsIsConst ? "const" : "readonly";
        Console.WriteLine($"// SeamsCost: Seams.Points is {kind} (IsLiteral={PointsIsConst}) in {typeof(Seams).Assembly.Location}");
        ComputeGuest.Record($"seams-points-{kind}", typeof(Seams).Assembly.Location);
    }

    [IterationSetup]
    public void CreateMachine() => machine = ComputeGuest.Create(1, iterations);

    [Benchmark(Description = "emulated work(N), 1 vCPU")]
    public long Emulated()
    {
        var r = ComputeGuest.RunChecked(machine!, expected);
        ComputeGuest.Record($"insns-{nameof(SeamsCost)}-{(PointsIsConst ? NoSeamsJob : SeamsJob)}", r.TotalInstructions.ToString());
        return r.TotalInstructions;
    }

    [IterationCleanup]
    public void DisposeMachine() { machine?.Dispose(); machine = null; }
}

public class SeamsConfig : BenchConfig
{
    public SeamsConfig() : base(seams: true) { }
}
