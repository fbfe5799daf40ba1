using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Dbt.Tests;

/// <summary>
/// switchon/switchoff while the kernel works: the guest's own SYS_DBT (dbt_toggle switches the DBT
/// off and on 20 times while the file server runs on the other CPUs), the host's --dbt-on-at, and
/// the cache-full path (a tiny main pool flushed again and again during the default workloads).
/// </summary>
public class SwitchTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(2, "free")]
    [InlineData(4, "free")]
    [InlineData(2, "det")]
    [InlineData(4, "det")]
    public void SwitchingOffAndOnDuringTheFileServerLosesNothing(int vcpus, string exec)
    {
        var r = KernelSupport.Boot(DbtOptions.Default, vcpus, Support.Control(exec), "run=dbt_toggle,selftest", countNative: false);
        output.WriteLine(r.Dbt!.Stats.ToString());
        Assert.True(r.Result.Reason == StopReason.Exited && r.Result.ExitStatus == 0, $"{r.Result.Reason}: {r.Result.Message}\n{r.Console}");
        Assert.Contains($"checksum={KernelSupport.FileServerChecksum}", r.Console);
        Assert.Contains("result dbt_toggle rounds=20 offs=20 ons=20 dbt=1", r.Console);
        Assert.Contains("result selftest checks=25 failed=0", r.Console);
        Assert.Equal(20, r.Dbt.Stats.SwitchOffs);
        Assert.Equal(20, r.Dbt.Stats.SwitchOns);
        Assert.True(r.Dbt.Stats.StackWordsRewritten > 0);
    }

    // Small pools flush every few thousand instructions: 12 KiB is a third shadow-IDT entry paths.
    [Theory]
    [InlineData(1, "det", 12)]
    [InlineData(2, "det", 12)]
    [InlineData(2, "det", 16)]
    [InlineData(2, "free", 16)]
    [InlineData(4, "free", 12)]
    public void ATinyCodeCacheIsFlushedDuringTheWorkloadsAndTheResultsStayNative(int vcpus, string exec, int kib) => TinyCache(vcpus, exec, kib);

    private void TinyCache(int vcpus, string exec, int kib)
    {
        var opts = DbtOptions.Default with { MainPoolLimit = (ulong)kib * 1024 };
        // 4 vCPUs on 2 cores with a flush every few thousand instructions: each flush stops the world,
        // so run time varies from 11 to 56 s alone and more beside the other test assemblies.
        var r = KernelSupport.Boot(opts, vcpus, Support.Control(exec), countNative: false, watchdog: TimeSpan.FromMinutes(4));
        output.WriteLine(r.Dbt!.Stats.ToString());
        KernelTests.AssertAllPassed(r, $"tiny cache {vcpus} {exec}");
        Assert.True(r.Dbt.Stats.Flushes >= 3, $"only {r.Dbt.Stats.Flushes} flushes");
    }

    [Fact]
    public void ATinyCodeCacheWithoutTheStackRewriteFails()
    {
        var opts = DbtOptions.Default with { MainPoolLimit = 12 * 1024, PlantedSwitchoffKeepsStacks = true };
        var r = KernelSupport.Boot(opts, 2, new Deterministic(1000), countNative: false, maxInstructions: 200_000_000);
        output.WriteLine($"{r.Result.Reason}: {r.Result.Message}");
        Assert.False(r.Result.Reason == StopReason.Exited && r.Result.ExitStatus == 0 && r.Console.Contains("init: 10 workloads, 0 failed"),
            "a flush that leaves code-cache return addresses on the stacks went unnoticed");
    }

    [Theory]
    [InlineData("det")]
    [InlineData("free")]
    public void SwitchonAtAnInstructionCountTakesOverARunningKernel(string exec)
    {
        var opts = DbtOptions.Default with { SwitchOnAt = 3_000_000 };
        var r = KernelSupport.Boot(opts, 2, Support.Control(exec), countNative: false);
        output.WriteLine(r.Dbt!.Stats.ToString());
        KernelTests.AssertAllPassed(r, $"switchon at 3M {exec}");
        Assert.Equal(1, r.Dbt.Stats.SwitchOns);
        Assert.True(r.Dbt.Stats.BlocksTranslated > 100);
    }
}
