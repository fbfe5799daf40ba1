using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class SmokeTests
{
    [Fact]
    public void GuestExitsWithStatusAndWritesConsole()
    {
        using var g = new Guest();
        g.Prologue();
        g.A.mov(al, (byte)'h');
        g.A.@out(0xE9, al);
        g.A.mov(al, (byte)'i');
        g.A.@out(0xE9, al);
        g.A.mov(rax, 0x1234_5678_9ABCUL);
        g.Store(0, rax);
        g.Exit(42);
        var r = g.Run();
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(42, r.ExitStatus);
        Assert.Equal("hi", g.ConsoleText);
        Assert.Equal(0x1234_5678_9ABCUL, g.Slot(0));
    }
}
