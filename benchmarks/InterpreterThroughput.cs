using BenchmarkDotNet.Attributes;
using Harness.Smp;
using Harness.Smp.Compile;

namespace Harness.Benchmarks;

/// <summary>
/// Single-vCPU throughput: boot compute.elf (FreeRunning, 1 vCPU) and run work(N) to the guest's
/// exit, interpreted and with hot blocks compiled (the default), against the same work(N) compiled
/// natively (libwork.so, the baseline). Each run is a fresh machine, so the compiled runs include
/// the compiler's warm-up (the first blocks interpreted while their regions compile); the run of
/// work(2N) gives the steady state: (instructions(2N) - instructions(N)) / (time(2N) - time(N)).
/// Columns: Ratio = emulated / native time; Guest MIPS = retired guest instructions / mean time.
/// </summary>
[Config(typeof(BenchConfig))]
public class InterpreterThroughput
{
    private ulong iterations;
    private ulong[] expected = [], expectedDouble = [];
    private Machine? machine;

    [GlobalSetup]
    public void Setup()
    {
        iterations = ComputeGuest.Iterations;
        expected = ComputeGuest.Expected(1, iterations);
        expectedDouble = ComputeGuest.Expected(1, 2 * iterations);
    }

    // Same invocation shape as the emulated runs (one call per iteration) so BenchmarkDotNet puts
    // them in one group and the Ratio column (emulated / native) is filled in.
    [IterationSetup(Target = nameof(Native))]
    public void NoSetup() { }

    [Benchmark(Baseline = true, Description = "native work(N)")]
    public ulong Native() => ComputeGuest.NativeWork(iterations, ComputeGuest.Seed);

    [IterationSetup(Target = nameof(Emulated))]
    public void CreateInterpreted() => machine = ComputeGuest.Create(1, iterations, compile: BlockCompilation.Off);

    [Benchmark(Description = "interpreted work(N), 1 vCPU")]
    public long Emulated() => Run(nameof(Emulated), expected);

    [IterationSetup(Target = nameof(Compiled))]
    public void CreateCompiled() => machine = ComputeGuest.Create(1, iterations, compile: BlockCompilation.Hot);

    [Benchmark(Description = "compiled work(N), 1 vCPU")]
    public long Compiled() => Run(nameof(Compiled), expected);

    [IterationSetup(Target = nameof(CompiledDouble))]
    public void CreateCompiledDouble() => machine = ComputeGuest.Create(1, 2 * iterations, compile: BlockCompilation.Hot);

    [Benchmark(Description = "compiled work(2N), 1 vCPU")]
    public long CompiledDouble() => Run(nameof(CompiledDouble), expectedDouble);

    private long Run(string name, ulong[] want)
    {
        var r = ComputeGuest.RunChecked(machine!, want);
        ComputeGuest.Record($"insns-{nameof(InterpreterThroughput)}-{name}", r.TotalInstructions.ToString());
        return r.TotalInstructions;
    }

    [IterationCleanup(Targets = [nameof(Emulated), nameof(Compiled), nameof(CompiledDouble)])]
    public void DisposeMachine() { machine?.Dispose(); machine = null; }
}
