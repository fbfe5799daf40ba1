using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Tests;

/// <summary>The dispatcher's entry contract: interrupts off (checked), a violation is a reported failure.</summary>
public class DispatcherTests
{
    private static byte[] BranchWithInterruptsOn() => Support.Asm(a =>
    {
        var next = a.CreateLabel();
        a.sti();
        a.mov(eax, 1);
        a.jmp(next);          // a direct branch: its first execution goes through an edge stub
        a.nop();
        a.Label(ref next);
        a.mov(__dword_ptr[Support.Data], eax);
        Support.Exit(a);
    });

    [Fact]
    public void AnEdgeStubThatDoesNotClearInterruptsIsReportedNotRun()
    {
        var r = Support.Run(BranchWithInterruptsOn(), translate: true, options: new DbtOptions { PlantedEdgeWithoutCli = true });
        Assert.Equal(StopReason.HostError, r.Result.Reason);
        Assert.Contains("dispatcher entered with interrupts enabled (IF=1)", r.Result.Message);
        Assert.Equal(0u, BitConverter.ToUInt32(r.DataPage, 0));
    }

    [Fact]
    public void TheSameProgramWithCliInTheStubRuns()
    {
        var r = Support.Run(BranchWithInterruptsOn(), translate: true);
        Assert.Equal(StopReason.Exited, r.Result.Reason);
        Assert.Equal(1u, BitConverter.ToUInt32(r.DataPage, 0));
        Assert.Null(r.Dbt!.Stats.Failure);
    }
}
