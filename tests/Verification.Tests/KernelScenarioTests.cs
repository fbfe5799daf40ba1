using Harness.Smp.Memory;
using Harness.Verification.Scenarios;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Verification.Tests;

/// <summary>
/// The guest kernel under Coyote (self-test only, 2 vCPUs, scheduling points on the kernel's
/// .data/.bss): the broken-spinlock build is caught by the kernel's own owner ASSERT and replays;
/// the normal build passes the same budget clean. Needs guest/build.sh (ci/test.sh runs it).
/// </summary>
public class KernelScenarioTests(ITestOutputHelper output)
{
    private const uint Budget = 3;

    private static Scenario Kernel(string image, MemoryModel model = MemoryModel.Sc)
    {
        string path = Path.Combine(Support.RepoRoot, "guest", "build", "kernel", image);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} is missing: build the guests first (bash guest/build.sh)", path);
        return MachineScenarios.KernelSelftest(path, memoryModel: model);
    }

    private static ExploreOptions Options => new()
    {
        Iterations = Budget, Seed = 1, MaxSchedulingSteps = 2_000_000, TraceDirectory = Support.TraceDir,
    };

    [Fact]
    public void BrokenSpinlockPanicsTheKernel()
    {
        var s = Kernel("kernel-broken-spinlock.elf");
        var r = Explorer.Explore(s, Options);
        output.WriteLine(r.ToString());
        Assert.True(r.BugFound, $"not found in {Budget} executions:\n{r.Log}");
        Assert.Contains("kernel panic: kernel panic (cpu ", r.Failure);
        var replay = Explorer.Replay(s, r.TracePath!);
        output.WriteLine($"replay: {replay.Reproduced} in {replay.Elapsed.TotalSeconds:F2} s");
        Assert.True(replay.Reproduced, replay.Log);
        Assert.Equal(r.Failure, replay.Failure);
    }

    /// <summary>
    /// kernel-missing-fence.elf leaves out the fence between the AP mailbox stores and the
    /// start-up IPI (a wrmsr to the x2APIC ICR, which does not drain the store buffer): under TSO
    /// an AP starts from a stale mailbox and the machine triple-faults; the trace replays. Under
    /// SC the same budget finds nothing: the bug exists only with store buffers.
    /// </summary>
    [Fact]
    public void MissingFenceIsFoundOnlyUnderTso()
    {
        var tso = Kernel("kernel-missing-fence.elf", MemoryModel.Tso);
        var r = Explorer.Explore(tso, Options);
        output.WriteLine(r.ToString());
        Assert.True(r.BugFound, $"not found in {Budget} executions under TSO:\n{r.Log}");
        Assert.Contains("not a guest exit: vCPU 1", r.Failure); // the AP, started from a stale mailbox
        var replay = Explorer.Replay(tso, r.TracePath!);
        Assert.True(replay.Reproduced, replay.Log);
        Assert.Equal(r.Failure, replay.Failure);

        var sc = Explorer.Explore(Kernel("kernel-missing-fence.elf"), Options);
        output.WriteLine(sc.ToString());
        Assert.False(sc.BugFound, sc.Failure);
        Assert.Equal((int)Budget, sc.IterationsRun);
    }

    [Fact]
    public void CorrectKernelPassesCleanUnderTso()
    {
        var r = Explorer.Explore(Kernel("kernel.elf", MemoryModel.Tso), Options);
        output.WriteLine(r.ToString());
        Assert.False(r.BugFound, $"{r.Failure}\n{r.Log}");
        Assert.Equal(0, r.StepBoundHits);
    }

    [Fact]
    public void CorrectSpinlockPassesClean()
    {
        var r = Explorer.Explore(Kernel("kernel.elf"), Options);
        output.WriteLine(r.ToString());
        Assert.False(r.BugFound, $"{r.Failure}\n{r.Log}");
        Assert.Equal((int)Budget, r.IterationsRun);
        Assert.Equal(0, r.StepBoundHits);
    }
}
