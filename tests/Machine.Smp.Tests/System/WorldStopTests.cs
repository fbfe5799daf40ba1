using Harness.Tests.Shared;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

/// <summary>
/// Machine.World (Control/WorldStop.cs), free-running: while a host action runs from one vCPU's
/// vmcall, every other started vCPU is parked at a block boundary; if one never reaches a state the
/// safe-point filter accepts, the requester stops the machine with a report instead of hanging.
/// </summary>
public class WorldStopTests
{
    const ulong Counter = Guest.Data + 0x200, Done = Guest.Data + 0x208;

    /// <summary>BSP: start the APs, wait until each has counted, vmcall (the host's world stop), release them, exit. APs: count until released.</summary>
    static Guest CountingGuest(int cpus)
    {
        var g = new Guest(cpus, new FreeRunning(), maxInstructions: 2_000_000_000);
        var a = g.A;
        var ap = a.CreateLabel();
        g.Prologue();
        for (int n = 1; n < cpus; n++) SmpTests.StartAp(g, n, ap, 0);
        var wait = a.CreateLabel();
        a.Label(ref wait);
        a.pause();
        a.mov(rax, __qword_ptr[Counter]);
        a.cmp(rax, 1000 * (cpus - 1));
        a.jb(wait);
        a.vmcall();
        a.mov(__qword_ptr[Done], 1);
        g.Exit(0);

        a.Label(ref ap);
        var count = ap;
        a.@lock.inc(__qword_ptr[Counter]);
        a.cmp(__qword_ptr[Done], 0);
        a.je(count);
        var park = a.CreateLabel();
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);
        return g;
    }

    /// <summary>Reads the counter, lets the host run for a while, reads it again: equal only if no AP ran in between.</summary>
    static (ulong Before, ulong After) Watch(Guest g)
    {
        ulong before = g.ReadU64(Counter);
        Thread.Sleep(50);
        return (before, g.ReadU64(Counter));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void TheOtherVcpusStayParkedWhileTheActionRuns(int cpus)
    {
        using var g = CountingGuest(cpus);
        (ulong Before, ulong After) seen = default;
        bool ran = false;
        g.M.OnVmcall(v => ran = g.M.World.Run(v, () => seen = Watch(g)));
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.True(ran);
        Assert.True(seen.Before >= 1000UL * (ulong)(cpus - 1), $"counter {seen.Before}");
        Assert.True(seen.Before == seen.After, $"an AP counted while the world was stopped: {seen.Before} -> {seen.After}");
    }

    /// <summary>The check above can fail: the same action run without the world stop sees the APs counting.</summary>
    [Fact]
    public void WithoutTheStopTheWatchSeesTheApsRun()
    {
        using var g = CountingGuest(2);
        (ulong Before, ulong After) seen = default;
        g.M.OnVmcall(_ => seen = Watch(g));
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.True(seen.After > seen.Before, $"the counter did not move ({seen.Before}): the parking check could not fail");
    }

    [Fact]
    public void AVcpuThatNeverReachesASafePointIsReportedNotWaitedFor()
    {
        using var g = CountingGuest(2);
        g.M.Attach(new HookAgent { OnSafePoint = v => v.Index == 0 }); // planted: the AP's state is never acceptable
        g.M.World.Timeout = TimeSpan.FromMilliseconds(300);
        bool? ran = null;
        bool acted = false;
        g.M.OnVmcall(v => ran = g.M.World.Run(v, () => acted = true));
        var r = g.Run(timeoutMs: 10_000);
        Assert.False(acted);
        Assert.Equal(false, ran);
        Assert.Equal(StopReason.HostError, r.Reason);
        Assert.Contains("world stop requested by vCPU 0: the others did not park within 300 ms", r.Message);
        Assert.Matches(@"vCPU 1 rip 0x[0-9a-f]+ cpl 0", r.Message);
    }
}
