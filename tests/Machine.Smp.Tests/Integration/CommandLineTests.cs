using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>The boot-info block's command line (offset 40): the guest echoes it to the console.</summary>
public class CommandLineTests
{
    /// <summary>Prints the command line byte by byte, then exits with 1 if the pointer was 0, else 0.</summary>
    internal static byte[] EchoGuest() => Support.Asm(a =>
    {
        var none = a.CreateLabel();
        var loop = a.CreateLabel();
        var done = a.CreateLabel();
        a.mov(rsi, __qword_ptr[rdi + 40]);
        a.test(rsi, rsi);
        a.jz(none);
        a.Label(ref loop);
        a.mov(al, __byte_ptr[rsi]);
        a.test(al, al);
        a.jz(done);
        a.@out(0xE9, al);
        a.inc(rsi);
        a.jmp(loop);
        a.Label(ref done);
        a.xor(eax, eax);
        a.@out(0xF4, eax);
        a.Label(ref none);
        a.mov(eax, 1);
        a.@out(0xF4, eax);
    });

    static (RunResult r, string console) Run(string? commandLine)
    {
        var console = new MemoryStream();
        using var m = new Harness.Smp.Machine(new MachineOptions
        {
            MemoryBytes = 32UL << 20, ReservedBytes = 1UL << 20, Control = new Deterministic(1000),
            MaxInstructions = 100_000, Console = console, CommandLine = commandLine,
        });
        m.Memory.Write(0x100000, EchoGuest());
        var r = m.Run(entry: 0x100000);
        return (r, System.Text.Encoding.ASCII.GetString(console.ToArray()));
    }

    [Fact]
    public void GuestReadsTheCommandLine()
    {
        var (r, console) = Run("run=selftest,null_syscall quiet");
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(0, r.ExitStatus);
        Assert.Equal("run=selftest,null_syscall quiet", console);
    }

    [Fact]
    public void NoCommandLineIsAZeroPointer()
    {
        var (r, console) = Run(null);
        Assert.Equal(1, r.ExitStatus);
        Assert.Equal("", console);
    }

    [Theory]
    [InlineData("tab\there")]
    [InlineData("caf\u00e9")]
    public void NonPrintableCommandLinesAreRejected(string bad)
    {
        var e = Assert.Throws<ArgumentException>(() => new Harness.Smp.Machine(new MachineOptions { MemoryBytes = 32UL << 20, ReservedBytes = 1UL << 20, CommandLine = bad }));
        Assert.Contains("printable ASCII", e.Message);
    }
}
