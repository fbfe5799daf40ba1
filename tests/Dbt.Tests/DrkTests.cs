using Harness.Tests.Shared;
using Harness.Dbt.Translate;
using Harness.Smp.Control;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Dbt.Tests;

/// <summary>
/// The DRK-style baseline (--dbt drk): interrupts, exceptions and syscalls go through the
/// dispatcher, handlers see native PCs, external interrupts arrive only at native boundaries.
/// (Native results on 1, 2 and 4 vCPUs: <see cref="KernelTests"/>' matrix; smp-demo, which checks
/// interrupted PCs: the CLI tests in Machine.Smp.Tests.)
/// </summary>
public class DrkTests(ITestOutputHelper output)
{
    /// <summary>External interrupts delivered in the code cache, and how many of them at a native boundary.</summary>
    private static (KernelSupport.KernelRun Run, long InCache, long AtBoundary) Deliveries(DbtOptions options)
    {
        long inCache = 0, atBoundary = 0;
        var run = KernelSupport.Boot(options, 2, new Deterministic(1000), "run=selftest,pipe_rtt,page_fault", setup: (m, d) =>
            m.OnEventDelivering((v, vector, byInstruction, rip) =>
            {
                if (byInstruction || !d!.Cache.Contains(rip)) return;
                Interlocked.Increment(ref inCache);
                if (BlockTranslator.RecoverAt(d.Translator.SortedBlocks(), rip) is { Pops: 0, FlagsWord: -1, TargetOnStack: false })
                    Interlocked.Increment(ref atBoundary);
            }));
        return (run, inCache, atBoundary);
    }

    [Fact]
    public void ExternalInterruptsArriveOnlyAtNativeBoundariesAndThePlantedTwinIsCaught()
    {
        var (drk, inCache, atBoundary) = Deliveries(DbtOptions.Drk);
        output.WriteLine($"drk: {inCache} external interrupts in the cache, {atBoundary} at native boundaries; {drk.Dbt!.Stats}");
        Assert.Equal(0, drk.Result.ExitStatus);
        Assert.True(inCache > 50, $"only {inCache} interrupts came in translated code: the check saw too little");
        Assert.Equal(inCache, atBoundary);

        // The planted twin: delivered anywhere, frames rolled back from inside translations.
        var (planted, pInCache, pAtBoundary) = Deliveries(DbtOptions.Drk with { PlantedDrkInterruptsAnywhere = true });
        output.WriteLine($"planted: {pInCache} in the cache, {pAtBoundary} at native boundaries; {planted.Dbt!.Stats}");
        Assert.True(pAtBoundary < pInCache, "with interrupts delivered anywhere, some should land inside a translation");
    }

    /// <summary>
    /// Straight into a workload (no self-test in kernel mode first): the first interrupt comes from
    /// user mode, so the handler's first branch (before its swapgs) enters the dispatcher with the
    /// user's GS. The experiment runner found this ("dispatcher entered with GS base 0x0").
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void AHandlerEnteredFromUserModeBeforeAnyKernelModeRunReachesTheDispatcherWithTheUsersGs(int vcpus)
    {
        var run = KernelSupport.Boot(DbtOptions.Drk, vcpus, new Deterministic(1000), "selftest=0 run=page_fault,null_syscall:3000");
        Assert.True(run.Result.ExitStatus == 0, $"{run.Result.Reason}: {run.Result.Message}\n{run.Console}");
        Assert.Equal(["page_fault=0", "null_syscall=0"], run.WorkloadExits);
    }

    [Fact]
    public void SyscallsInterruptsAndIretqEnterTheDispatcherOnlyUnderDrk()
    {
        const string cmd = "run=null_syscall,page_fault";
        var drk = KernelSupport.Boot(DbtOptions.Drk, 1, new Deterministic(1000), cmd);
        var ncr = KernelSupport.Boot(DbtOptions.NoCallRet, 1, new Deterministic(1000), cmd);
        KernelSupport.KernelRun[] runs = [drk, ncr];
        foreach (var r in runs) Assert.True(r.Result.ExitStatus == 0, r.Result.Message + "\n" + r.Console);
        var s = drk.Dbt!.Stats;
        var n = ncr.Dbt!.Stats;
        output.WriteLine($"drk: {s}\nno-callret: {n}");
        output.WriteLine($"null_syscall insns/op: drk {drk.InsnsPerOp("null_syscall")}, no-callret {ncr.InsnsPerOp("null_syscall")}");
        Assert.True(s.SyscallEntries >= 2000, $"null_syscall makes 2000 syscalls; {s.SyscallEntries} entered the dispatcher");
        // Page faults (from user mode: their frames are the user's) and timer interrupts enter through
        // the gate stubs; the interrupts that came in kernel code had cache RIPs made native.
        Assert.True(s.GateEntries >= 256, $"page_fault takes 256 faults; {s.GateEntries} gate entries");
        Assert.True(s.FramesToNative > 0, "no interrupt frame had a code-cache RIP to convert");
        Assert.Equal(0, n.SyscallEntries + n.GateEntries + n.FramesToNative);
        // Each syscall costs the dispatcher entry the fast design avoids.
        Assert.True(s.DispatcherEntries > n.DispatcherEntries + 2000, $"drk {s.DispatcherEntries} entries, no-callret {n.DispatcherEntries}");
    }
}
