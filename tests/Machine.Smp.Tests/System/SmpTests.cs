using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Iced.Intel;
using Xunit;
using static Harness.Smp.Tests.SystemTests.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class SmpTests
{
    const ulong Count = Guest.Data, PerCpu = Guest.Data + 0x100;

    static ExecutionControl Control(string name) => name == "det" ? new Deterministic(quantum: 100) : new FreeRunning();


    /// <summary>Emits the BSP side of starting AP n: mailbox (rip = label, rsp, arg) and the start-up IPI.</summary>
    internal static void StartAp(Guest g, int n, Label entry, ulong arg)
    {
        var a = g.A;
        ulong mb = Guest.Mailbox(n);
        a.lea(rax, __[entry]);
        a.mov(__qword_ptr[mb], rax);
        a.mov(rax, Guest.ApStackBase + (ulong)n * 0x4000);
        a.mov(__qword_ptr[mb + 8], rax);
        a.mov(rax, arg);
        a.mov(__qword_ptr[mb + 16], rax);
        g.Wrmsr(0x830, ((ulong)n << 32) | 0x600);
    }

    /// <summary>Emits: spin (pause) until the qword at addr equals value.</summary>
    internal static void WaitFor(Guest g, ulong addr, ulong value)
    {
        var a = g.A;
        var loop = a.CreateLabel();
        a.Label(ref loop);
        a.pause();
        a.mov(rax, __qword_ptr[addr]);
        a.cmp(rax, (int)value);
        a.jne(loop);
    }

    [Theory]
    [InlineData(2, "det")]
    [InlineData(4, "det")]
    [InlineData(2, "free")]
    [InlineData(4, "free")]
    public void ApsStartFromMailboxWithRspAndArg(int cpus, string control)
    {
        using var g = new Guest(cpus, Control(control), maxInstructions: 20_000_000);
        var a = g.A;
        var ap = a.CreateLabel();
        g.Prologue();
        for (int n = 1; n < cpus; n++) StartAp(g, n, ap, 0xA000 + (ulong)n);
        WaitFor(g, Count, (ulong)(cpus - 1));
        g.Exit(0);

        a.Label(ref ap);
        a.mov(r9, rsp);                     // before anything touches the stack
        a.pushfq();
        a.pop(r10);
        a.xor(r11d, r11d);
        a.mov(r11w, cs);
        g.Rdmsr(0x802);                     // APIC ID
        a.mov(rbx, rax);
        a.shl(rbx, 6);
        a.add(rbx, (int)PerCpu);
        a.mov(__qword_ptr[rbx], rdi);
        a.mov(__qword_ptr[rbx + 8], r9);
        a.mov(__qword_ptr[rbx + 16], rax);
        a.mov(__qword_ptr[rbx + 24], r10);
        a.mov(__qword_ptr[rbx + 32], r11);
        a.@lock.inc(__qword_ptr[Count]);
        var park = a.CreateLabel();
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);

        var r = g.Run();
        AssertExited(r);
        for (int n = 1; n < cpus; n++)
        {
            ulong b = PerCpu + (ulong)n * 64;
            Assert.Equal(0xA000 + (ulong)n, g.ReadU64(b));                            // RDI = arg
            Assert.Equal(Guest.ApStackBase + (ulong)n * 0x4000, g.ReadU64(b + 8));   // RSP
            Assert.Equal((ulong)n, g.ReadU64(b + 16));                                // APIC ID = index
            Assert.Equal(0x2UL, g.ReadU64(b + 24) & ~(ulong)Rflags.Arith);            // IF = 0
            Assert.Equal(0x08UL, g.ReadU64(b + 32));
            Assert.True(r.Vcpus[n].Started);
        }
    }

    /// <summary>
    /// Free-running guest time stays coherent: an idle AP (sti; hlt with a 1,000-instruction periodic
    /// timer) may not jump its clock past the busy BSP's, so when the BSP exits after ~2M
    /// instructions the AP's guest time is within a few ticks of it (not billions ahead), it took
    /// roughly one interrupt per tick of that time, and it executed only its handlers.
    /// </summary>
    [Fact]
    public void IdleApClockFollowsTheBusyVcpuFreeRunning()
    {
        using var g = new Guest(2, new FreeRunning(), maxInstructions: 1_000_000_000);
        var a = g.A;
        var ap = a.CreateLabel();
        var busy = a.CreateLabel();
        g.Prologue();
        StartAp(g, 1, ap, 0);
        WaitFor(g, Guest.Data + 8, 1);      // AP's timer is running
        a.mov(ecx, 1_000_000);
        a.Label(ref busy);
        a.dec(ecx);
        a.jnz(busy);
        g.Exit(0);

        a.Label(ref ap);
        a.lidt(__[Guest.Idtr]);
        g.Wrmsr(0x83E, 0xB);                // divide by 1
        g.Wrmsr(0x832, (1UL << 17) | 0x40); // periodic, vector 0x40
        g.Wrmsr(0x838, 1000);
        a.mov(__qword_ptr[Guest.Data + 8], 1);
        var park = a.CreateLabel();
        a.Label(ref park);
        a.sti();
        a.hlt();
        a.jmp(park);
        g.HandlerHere(0x40);
        g.Wrmsr(0x80B, 0);
        a.iretq();

        var r = g.Run();
        AssertExited(r);
        long bsp = r.Vcpus[0].GuestTime, apTime = r.Vcpus[1].GuestTime;
        Assert.True(bsp >= 2_000_000, $"BSP time {bsp}");
        Assert.True(apTime <= bsp + 10_000, $"the idle AP's clock ran ahead: AP {apTime:N0}, BSP {bsp:N0}");
        Assert.InRange(r.Vcpus[1].Interrupts, apTime / 1000 / 2, apTime / 1000 + 2);
        Assert.True(r.Vcpus[1].Instructions < apTime / 10, $"AP executed {r.Vcpus[1].Instructions:N0} of {apTime:N0}");
    }

    /// <summary>A fixed IPI from vCPU 0 wakes vCPU 1 from hlt (IF = 1); its handler sees the vector and EOIs.</summary>
    [Theory]
    [InlineData("det")]
    [InlineData("free")]
    public void FixedIpiWakesHaltedAp(string control)
    {
        using var g = new Guest(2, Control(control), maxInstructions: 20_000_000);
        var a = g.A;
        var ap = a.CreateLabel();
        var afterHlt = a.CreateLabel();
        g.Prologue();
        StartAp(g, 1, ap, 0);
        WaitFor(g, Guest.Data + 8, 1);      // AP ready
        g.Wrmsr(0x830, (1UL << 32) | 0x50);
        WaitFor(g, Guest.Data + 16, 1);     // IPI handled
        g.Exit(0);

        a.Label(ref ap);
        a.lidt(__[Guest.Idtr]);
        a.mov(__qword_ptr[Guest.Data + 8], 1);
        var park = a.CreateLabel();
        a.Label(ref park);
        a.sti();
        a.hlt();
        a.Label(ref afterHlt);
        a.jmp(park);

        g.HandlerHere(0x50);
        g.Rdmsr(0x802);
        g.Store(3, rax);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(4, rax);
        g.Wrmsr(0x80B, 0);
        a.@lock.inc(__qword_ptr[Guest.Data + 16]);
        a.iretq();

        var r = g.Run();
        AssertExited(r);
        Assert.Equal(1UL, g.Slot(2));
        Assert.Equal(1UL, g.Slot(3));        // handled on APIC 1
        Assert.Equal(1L, r.Vcpus[1].Interrupts);
        Assert.Equal(0L, r.Vcpus[0].Interrupts);
        ulong rip = g.Slot(4);
        Assert.True(rip == g.Addr(afterHlt) || (control == "free" && rip < g.Addr(afterHlt) && rip >= g.Addr(park)),
            $"frame rip 0x{rip:x}");
        if (control == "det") Assert.Equal(g.Addr(afterHlt), rip);
    }

    /// <summary>Every vCPU halted with IF = 0 and nothing to wake it: the machine reports a deadlock.</summary>
    [Theory]
    [InlineData(1, "det")]
    [InlineData(1, "free")]
    [InlineData(2, "det")]
    [InlineData(2, "free")]
    public void HltWithInterruptsOffEverywhereIsDeadlock(int cpus, string control)
    {
        using var g = new Guest(cpus, Control(control), maxInstructions: 20_000_000);
        var a = g.A;
        var ap = a.CreateLabel();
        g.Prologue();
        if (cpus > 1)
        {
            StartAp(g, 1, ap, 0);
            WaitFor(g, Guest.Data + 8, 1);
        }
        a.cli();
        a.hlt();
        g.Exit(1);
        a.Label(ref ap);
        a.mov(__qword_ptr[Guest.Data + 8], 1);
        a.hlt();
        g.Exit(2);
        var r = g.Run();
        Assert.Equal(StopReason.Deadlock, r.Reason);
        Assert.True(g.M.Vcpus.All(v => v.IsHalted));
    }

    /// <summary>hlt with IF = 1 but no timer, no IPI source and a masked timer: still a deadlock.</summary>
    [Theory]
    [InlineData("det")]
    [InlineData("free")]
    public void HltWithInterruptsOnButNoSourceIsDeadlock(string control)
    {
        using var g = new Guest(1, Control(control));
        var a = g.A;
        g.Prologue();
        g.Wrmsr(0x832, 0x40 | (1 << 16));   // masked
        g.Wrmsr(0x838, 100);
        a.sti();
        a.hlt();
        g.Exit(1);
        var r = g.Run();
        Assert.Equal(StopReason.Deadlock, r.Reason);
    }

    /// <summary>A broadcast fixed IPI (shorthand "all excluding self") reaches every AP once and not the sender.</summary>
    [Theory]
    [InlineData("det")]
    [InlineData("free")]
    public void BroadcastIpiExcludingSelfReachesEveryAp(string control)
    {
        const int cpus = 4;
        using var g = new Guest(cpus, Control(control), maxInstructions: 20_000_000);
        var a = g.A;
        var ap = a.CreateLabel();
        g.Prologue();
        for (int n = 1; n < cpus; n++) StartAp(g, n, ap, 0);
        WaitFor(g, Guest.Data + 8, cpus - 1);       // every AP ready
        a.sti();
        g.Wrmsr(0x830, (3UL << 18) | 0x50);
        WaitFor(g, Guest.Data + 16, cpus - 1);      // every AP handled it
        for (int i = 0; i < 50; i++) a.nop();
        g.Exit(0);

        a.Label(ref ap);
        a.lidt(__[Guest.Idtr]);
        a.@lock.inc(__qword_ptr[Guest.Data + 8]);
        var park = a.CreateLabel();
        a.Label(ref park);
        a.sti();
        a.hlt();
        a.jmp(park);

        g.HandlerHere(0x50);
        g.Rdmsr(0x802);
        a.@lock.bts(__qword_ptr[Guest.Data + 24], eax);
        a.@lock.inc(__qword_ptr[Guest.Data + 16]);
        g.Wrmsr(0x80B, 0);
        a.iretq();

        var r = g.Run();
        AssertExited(r);
        Assert.Equal(0b1110UL, g.Slot(3));
        Assert.Equal(0L, r.Vcpus[0].Interrupts);
        for (int n = 1; n < cpus; n++) Assert.Equal(1L, r.Vcpus[n].Interrupts);
    }
}
