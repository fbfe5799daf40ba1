using Harness.Smp;
using BenchmarkDotNet.Attributes;
using Harness.Dbt.Reports;

namespace Harness.Benchmarks;

/// <summary>
/// Host time of the guest kernel natively and under the DBT on the same emulator: one boot running
/// every measured workload once (selftest=0 run=null_syscall,...,fileserver; --quick: null_syscall
/// only), 1 vCPU, deterministic, so every iteration executes exactly the same guest instructions
/// (recorded, shown as Guest MIPS). Ratio = translated / native time, translation warm-up included
/// (`harness bench dbt` also reports the steady state). The machine is built in [IterationSetup].
/// </summary>
[Config(typeof(BenchConfig))]
public class KernelDbt
{
    private byte[] elf = [];
    private string cmdline = "";
    private Machine? machine;

    public static string KernelPath => Path.Combine(ComputeGuest.RepoRoot, "guest", "build", "kernel", "kernel.elf");

    [GlobalSetup]
    public void Setup()
    {
        if (!File.Exists(KernelPath)) throw new FileNotFoundException($"{KernelPath} not built: run guest/build.sh (or benchmarks/run.sh)");
        elf = File.ReadAllBytes(KernelPath);
        cmdline = "selftest=0 run=" + string.Join(',', BenchConfig.Quick ? ["null_syscall"] : KernelWorkloads.Measured);
    }

    private void Create(string configuration)
    {
        machine = new Machine(new MachineOptions
        {
            Vcpus = 1, MemoryBytes = 64UL << 20, Control = new Smp.Control.Deterministic(KernelBench.Quantum), CommandLine = cmdline,
        });
        machine.LoadElf(elf, "kernel.elf");
        if (KernelWorkloads.Options(configuration) is { } o)
            Dbt.KernelDbt.Attach(machine, new Dbt.DbtOptions { CallRet = o.CallRet, Kernel = Dbt.Kernel.KernelImage.FromElf(elf, "kernel.elf") });
    }

    private long Boot(string method)
    {
        var r = machine!.Run();
        if (!r.Exited || r.ExitStatus != 0) throw new InvalidOperationException($"kernel run failed: {r.Reason} (status {r.ExitStatus}): {r.Message}");
        ComputeGuest.Record($"insns-{nameof(KernelDbt)}-{method}", r.TotalInstructions.ToString());
        return r.TotalInstructions;
    }

    [IterationSetup(Target = nameof(Native))] public void CreateNative() => Create("off");
    [IterationSetup(Target = nameof(Default))] public void CreateDefault() => Create("default");
    [IterationSetup(Target = nameof(NoCallRet))] public void CreateNoCallRet() => Create("no-callret");

    [Benchmark(Baseline = true, Description = "kernel workloads, native")]
    public long Native() => Boot(nameof(Native));

    [Benchmark(Description = "kernel workloads, DBT default")]
    public long Default() => Boot(nameof(Default));

    [Benchmark(Description = "kernel workloads, DBT no-callret")]
    public long NoCallRet() => Boot(nameof(NoCallRet));

    [IterationCleanup]
    public void DisposeMachine() { machine?.Dispose(); machine = null; }
}
