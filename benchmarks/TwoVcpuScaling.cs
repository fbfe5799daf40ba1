using Harness.Smp;
using BenchmarkDotNet.Attributes;

namespace Harness.Benchmarks;

/// <summary>
/// SMP scaling under FreeRunning (one host thread per vCPU): 1 vCPU running work(N) vs 2 vCPUs each
/// running work(N) on their own data. Column "Scaling" = aggregate work throughput relative to
/// 1 vCPU = Vcpus * mean(1 vCPU) / mean(this); ideal 2.0, goal >= 1.8.
/// </summary>
[Config(typeof(BenchConfig))]
public class TwoVcpuScaling
{
    [Params(1, 2)]
    public int Vcpus { get; set; }

    private ulong iterations;
    private ulong[] expected = [];
    private Machine? machine;

    [GlobalSetup]
    public void Setup()
    {
        iterations = ComputeGuest.Iterations;
        expected = ComputeGuest.Expected(Vcpus, iterations);
    }

    [IterationSetup]
    public void CreateMachine() => machine = ComputeGuest.Create(Vcpus, iterations);

    [Benchmark(Description = "work(N) on every vCPU")]
    public long Run()
    {
        var r = ComputeGuest.RunChecked(machine!, expected);
        ComputeGuest.Record($"insns-{nameof(TwoVcpuScaling)}-{Vcpus}", string.Join(",", r.Vcpus.Select(v => v.Instructions)));
        return r.TotalInstructions;
    }

    [IterationCleanup]
    public void DisposeMachine() { machine?.Dispose(); machine = null; }
}
