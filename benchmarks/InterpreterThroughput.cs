using BenchmarkDotNet.Attributes;
using Harness.Smp;

namespace Harness.Benchmarks;

/// <summary>
/// Single-vCPU interpreter throughput: boot compute.elf (FreeRunning, 1 vCPU) and run work(N) to
/// the guest's exit, against the same work(N) compiled natively (libwork.so, the baseline).
/// Columns: Ratio = emulated / native time; Guest MIPS = retired guest instructions / mean time.
/// </summary>
[Config(typeof(BenchConfig))]
public class InterpreterThroughput
{
    private ulong iterations;
    private ulong[] expected = [];
    private Machine? machine;

    [GlobalSetup]
    public void Setup()
    {
        iterations = ComputeGuest.Iterations;
        expected = ComputeGuest.Expected(1, iterations);
    }

    // Same invocation shape as Emulated (one call per iteration) so BenchmarkDotNet puts both in
    // one group and the Ratio column (emulated / native) is filled in.
    [IterationSetup(Target = nameof(Native))]
    public void NoSetup() { }

    [Benchmark(Baseline = true, Description = "native work(N)")]
    public ulong Native() => ComputeGuest.NativeWork(iterations, ComputeGuest.Seed);

    [IterationSetup(Target = nameof(Emulated))]
    public void CreateMachine() => machine = ComputeGuest.Create(1, iterations);

    [Benchmark(Description = "emulated work(N), 1 vCPU")]
    public long Emulated()
    {
        var r = ComputeGuest.RunChecked(machine!, expected);
        ComputeGuest.Record($"insns-{nameof(InterpreterThroughput)}-{nameof(Emulated)}", r.TotalInstructions.ToString());
        return r.TotalInstructions;
    }

    [IterationCleanup(Target = nameof(Emulated))]
    public void DisposeMachine() { machine?.Dispose(); machine = null; }
}
