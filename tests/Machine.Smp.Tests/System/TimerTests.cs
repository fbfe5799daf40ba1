using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Harness.Smp.Tests.SystemTests.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

/// <summary>The x2APIC timer and EOI rules; guest time = retired instructions, so times are exact under Deterministic.</summary>
public class TimerTests
{
    const uint Lvt = 0x832, Init = 0x838, Cur = 0x839, Div = 0x83E, Eoi = 0x80B, Icr = 0x830;
    const ulong Count = Guest.Data, Times = Guest.Data + 0x100;


    /// <summary>Emits: rdtsc into r12 exactly 5 instructions before the timer starts counting (wrmsr of the initial count at +4).</summary>
    static void StartTimerTimed(Guest g, uint count)
    {
        var a = g.A;
        a.mov(ecx, Init);
        a.rdtsc();              // T
        a.mov(r12, rax);        // T+1
        a.mov(eax, count);      // T+2
        a.xor(edx, edx);        // T+3
        a.wrmsr();              // T+4: counting starts at T+5
    }

    /// <summary>Handler: first instruction rdtsc; records the time at Times[count], count++, EOI (optional), iretq.</summary>
    static void TimeRecordingHandler(Guest g, int vector, bool eoi = true, ulong counter = Count, ulong times = Times)
    {
        var a = g.A;
        g.HandlerHere(vector);
        a.rdtsc();
        a.shl(rdx, 32);
        a.or(rax, rdx);
        a.mov(rbx, __qword_ptr[counter]);
        a.mov(__qword_ptr[rbx * 8 + (long)times], rax);
        a.inc(__qword_ptr[counter]);
        if (eoi) g.Wrmsr(Eoi, 0);
        a.iretq();
    }

    [Theory]
    [InlineData(0xBu, 1, "det")]
    [InlineData(0x0u, 2, "det")]
    [InlineData(0x9u, 64, "det")]
    [InlineData(0x0u, 2, "free")]
    public void PeriodicTimerFiresAtExactGuestTimes(uint divideConfig, int divisor, string control)
    {
        const uint initial = 500;
        const int n = 5;
        using var g = new Guest(control: control == "det" ? new Deterministic(quantum: 97) : new FreeRunning(), maxInstructions: 5_000_000);
        var a = g.A;
        var wait = a.CreateLabel();
        g.Prologue();
        g.Wrmsr(Div, divideConfig);
        g.Wrmsr(Lvt, 0x40 | (1u << 17));
        StartTimerTimed(g, initial);
        a.sti();
        a.Label(ref wait);
        a.cmp(__qword_ptr[Count], n);
        a.jb(wait);
        a.cli();
        g.Wrmsr(Init, 0);                    // stop
        g.Exit(0);
        TimeRecordingHandler(g, 0x40);
        var r = g.Run();
        AssertExited(r);
        ulong t0 = g.M.Vcpus[0].Gpr(12) + 5;
        ulong period = initial * (ulong)divisor;
        for (int k = 0; k < n; k++)
            Assert.Equal(t0 + (ulong)(k + 1) * period, g.ReadU64(Times + (ulong)k * 8));
        Assert.Equal((long)n, r.Vcpus[0].Interrupts);
    }

    /// <summary>
    /// The current count decrements once per divisor instructions from the initial count
    /// (docs/boot-protocol.md section 5): after t instructions it is initial - floor(t / divisor).
    /// </summary>
    [Theory]
    [InlineData(0xBu, 1)]
    [InlineData(0x0u, 2)]
    [InlineData(0x1u, 4)]
    public void CurrentCountDecreasesOncePerDivisorInstructions(uint divideConfig, int divisor)
    {
        const uint initial = 1000;
        using var g = new Guest();
        var a = g.A;
        g.Prologue();
        g.Wrmsr(Div, divideConfig);
        g.Wrmsr(Lvt, 0x40 | (1u << 16));    // masked: no interrupt needed
        StartTimerTimed(g, initial);        // counting starts at r12 + 5
        for (int i = 0; i < 4; i++)
        {
            a.mov(ecx, Cur);                // (t)
            a.rdmsr();                      // (t+1): reads at time t+1
            a.mov(__qword_ptr[Guest.Data + (ulong)i * 8], rax);
            for (int k = 0; k < i * 3 + 1; k++) a.nop();
        }
        g.Rdmsr(Init);
        g.Store(10, rax);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        ulong start = g.M.Vcpus[0].Gpr(12) + 5;
        // Reads happen at start + 1, then each later by 3 + (i*3+1) instructions.
        ulong t = 1;
        var expected = new List<ulong>();
        for (int i = 0; i < 4; i++)
        {
            expected.Add(initial - t / (ulong)divisor);
            t += 3 + (ulong)(i * 3 + 1);
        }
        Assert.Equal(expected, Enumerable.Range(0, 4).Select(i => g.Slot(i)).ToList());
        Assert.True(g.Slot(3) < g.Slot(0) || divisor > 16);
        Assert.Equal((ulong)initial, g.Slot(10));
        _ = start;
    }

    [Fact]
    public void OneShotCurrentCountIsZeroAfterExpiry()
    {
        using var g = new Guest();
        var a = g.A;
        g.Prologue();
        g.Wrmsr(Div, 0xB);
        g.Wrmsr(Lvt, 0x40 | (1u << 16));
        g.Wrmsr(Init, 10);
        for (int i = 0; i < 20; i++) a.nop();
        g.Rdmsr(Cur);
        g.Store(0, rax);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(0UL, g.Slot(0));
    }

    /// <summary>
    /// Without an EOI the in-service timer vector blocks further interrupts of its priority class
    /// (same vector, or a self-IPI of 0x41) but not a higher class (0x51); after the EOI the
    /// pending ones are delivered, highest first.
    /// </summary>
    [Theory]
    [InlineData("det")]
    [InlineData("free")]
    public void EoiIsNeededBeforeNextSameClassInterrupt(string control)
    {
        using var g = new Guest(control: control == "det" ? new Deterministic(quantum: 50) : new FreeRunning());
        var a = g.A;
        const ulong C40 = Guest.Data, C41 = Guest.Data + 8, C51 = Guest.Data + 16, Order = Guest.Data + 0x80, OrderN = Guest.Data + 24;
        var spin = a.CreateLabel();
        g.Prologue();
        g.Wrmsr(Div, 0xB);
        g.Wrmsr(Lvt, 0x40 | (1u << 17));
        g.Wrmsr(Init, 200);
        a.sti();
        // Run for ~10 periods.
        a.mov(r15, 700);
        a.Label(ref spin);
        a.dec(r15);
        a.jnz(spin);
        g.Wrmsr(Icr, 0x40041);              // self IPI, same class as 0x40: blocked
        g.Wrmsr(Icr, 0x40051);              // higher class: delivered
        a.nop();
        a.nop();
        a.mov(rax, __qword_ptr[C40]); g.Store(4, rax);
        a.mov(rax, __qword_ptr[C41]); g.Store(5, rax);
        a.mov(rax, __qword_ptr[C51]); g.Store(6, rax);
        a.cli();
        g.Wrmsr(Init, 0);                   // stop the timer (0x40 stays pending in the IRR)
        a.sti();
        g.Wrmsr(Eoi, 0);                    // ends the first 0x40: 0x41 then 0x40 are delivered
        a.nop();
        a.nop();
        a.cli();
        g.Exit(0);

        void Handler(int vector, ulong counter, bool eoi)
        {
            g.HandlerHere(vector);
            a.inc(__qword_ptr[counter]);
            a.mov(rax, __qword_ptr[OrderN]);
            a.mov(__qword_ptr[rax * 8 + (long)Order], vector);
            a.inc(__qword_ptr[OrderN]);
            if (eoi) g.Wrmsr(Eoi, 0);
            a.iretq();
        }
        Handler(0x40, C40, eoi: false);
        Handler(0x41, C41, eoi: true);
        Handler(0x51, C51, eoi: true);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(1UL, g.Slot(4));       // one 0x40 only, though ~10 periods passed
        Assert.Equal(0UL, g.Slot(5));
        Assert.Equal(1UL, g.Slot(6));
        var order = Enumerable.Range(0, (int)g.Slot(3)).Select(i => g.ReadU64(Order + (ulong)i * 8)).ToArray();
        Assert.Equal([0x40UL, 0x51, 0x41, 0x40], order);
    }

    /// <summary>hlt with IF = 1 wakes on the timer: guest time jumps to the deadline; the frame RIP is after the hlt.</summary>
    [Theory]
    [InlineData("det")]
    [InlineData("free")]
    public void HltWakesOnTimerAtItsDeadline(string control)
    {
        using var g = new Guest(control: control == "det" ? new Deterministic(quantum: 100) : new FreeRunning());
        var a = g.A;
        var after = a.CreateLabel();
        g.Prologue();
        g.Wrmsr(Div, 0xB);
        g.Wrmsr(Lvt, 0x40);
        StartTimerTimed(g, 50_000);
        a.sti();
        a.hlt();
        a.Label(ref after);
        a.rdtsc();
        a.shl(rdx, 32);
        a.or(rax, rdx);
        g.Store(1, rax);
        g.Exit(0);
        g.HandlerHere(0x40);
        a.rdtsc();
        a.shl(rdx, 32);
        a.or(rax, rdx);
        g.Store(0, rax);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(2, rax);
        g.Wrmsr(Eoi, 0);
        a.iretq();
        var r = g.Run();
        AssertExited(r);
        ulong deadline = g.M.Vcpus[0].Gpr(12) + 5 + 50_000;
        Assert.Equal(deadline, g.Slot(0));
        Assert.Equal(g.Addr(after), g.Slot(2));
        Assert.True(g.Slot(1) > deadline && g.Slot(1) < deadline + 30);
        Assert.True(r.Vcpus[0].GuestTime >= 50_000, "guest time did not jump over the halt");
        Assert.True(r.Vcpus[0].Instructions < 1_000, "the halted stretch counted as executed instructions");
    }

    /// <summary>
    /// hlt with IF = 1 while the only pending vector is blocked by an in-service vector of the
    /// same priority class (no EOI, timer stopped): nothing can ever wake the vCPU, so the machine
    /// must report a deadlock rather than spin.
    /// </summary>
    [Theory]
    [InlineData("det")]
    [InlineData("free")]
    public void HltWithOnlyBlockedPendingVectorIsDeadlock(string control)
    {
        using var g = new Guest(control: control == "det" ? new Deterministic(quantum: 100) : new FreeRunning());
        var a = g.A;
        g.Prologue();
        a.sti();
        g.Wrmsr(Icr, 0x40040);              // 0x40 is delivered; its handler does not EOI
        a.nop();
        a.nop();
        g.Wrmsr(Icr, 0x40041);              // same class: stays pending
        a.nop();
        a.sti();
        a.hlt();
        g.Exit(1);
        g.HandlerHere(0x40);
        a.inc(__qword_ptr[Count]);
        a.iretq();
        g.HandlerHere(0x41);
        g.Exit(2);
        var r = g.Run(timeoutMs: 5000);
        Assert.Equal(1UL, g.Slot(0));
        Assert.Equal(StopReason.Deadlock, r.Reason);
    }
}
