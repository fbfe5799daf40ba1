using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Harness.Smp.Tests.SystemTests.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class InterruptTests
{

    /// <summary>Emits a handler body that stores RSP and the five frame words at slots base..base+5 and its own RFLAGS at base+6.</summary>
    static void RecordFrame(Guest g, int slot, int errorWords = 0)
    {
        var a = g.A;
        g.Store(slot, rsp);
        for (int i = 0; i < 5; i++)
        {
            a.mov(rax, __qword_ptr[rsp + 8 * (i + errorWords)]);
            g.Store(slot + 1 + i, rax);
        }
        a.pushfq();
        a.pop(rax);
        g.Store(slot + 6, rax);
    }

    [Fact]
    public void IntNPushesFrameAlignsStackAndIretqReturns()
    {
        using var g = new Guest();
        var a = g.A;
        var after80 = a.CreateLabel();
        var after81 = a.CreateLabel();
        g.Prologue(stack: Guest.KStackTop - 8); // misaligned by 8: delivery aligns down to 16
        a.sti();
        a.mov(rax, 1);
        a.@int(0x80);
        a.Label(ref after80);
        g.Store(0, rax);
        g.Store(1, rsp);
        a.pushfq();
        a.pop(rax);
        g.Store(2, rax);
        a.mov(rax, 2);
        a.@int(0x81);
        a.Label(ref after81);
        a.setc(bl);                          // the handler set CF in the frame's RFLAGS
        a.movzx(rbx, bl);
        g.Store(3, rbx);
        g.Store(4, rax);
        g.Exit(0);

        g.HandlerHere(0x80);                 // interrupt gate
        RecordFrame(g, 10);
        a.mov(rax, 0x80);
        a.iretq();
        g.HandlerHere(0x81, trap: true);     // trap gate
        RecordFrame(g, 20);
        a.or(__qword_ptr[rsp + 16], 1);      // CF in the saved RFLAGS
        a.mov(rax, 0x81);
        a.iretq();

        var r = g.Run();
        AssertExited(r);
        ulong expectedRsp = ((Guest.KStackTop - 8) & ~0xFUL) - 40;
        // int 0x80 through an interrupt gate.
        Assert.Equal(0x80UL, g.Slot(0));
        Assert.Equal(Guest.KStackTop - 8, g.Slot(1));      // iretq restored RSP
        Assert.Equal(0x202UL, g.Slot(2) & 0x202);          // IF back on after iretq
        Assert.Equal(expectedRsp, g.Slot(10));
        Assert.Equal(g.Addr(after80), g.Slot(11));         // RIP = next instruction
        Assert.Equal((ulong)Guest.KCs, g.Slot(12));
        Assert.Equal(0x202UL, g.Slot(13));                 // RFLAGS at the int: IF=1
        Assert.Equal(Guest.KStackTop - 8, g.Slot(14));     // RSP before delivery
        Assert.Equal((ulong)Guest.KDs, g.Slot(15));
        Assert.Equal(0UL, g.Slot(16) & (ulong)Rflags.IF);  // interrupt gate cleared IF
        // int 0x81 through a trap gate.
        Assert.Equal(expectedRsp, g.Slot(20));
        Assert.Equal(g.Addr(after81), g.Slot(21));
        Assert.Equal((ulong)Rflags.IF, g.Slot(26) & (ulong)Rflags.IF); // trap gate left IF set
        Assert.Equal(1UL, g.Slot(3));                      // iretq loaded CF from the frame
        Assert.Equal(0x81UL, g.Slot(4));
    }

    /// <summary>
    /// From ring 3, int 0x80 (DPL-3 gate) switches to TSS.RSP0 aligned down to 16, pushes the user
    /// SS:RSP, and iretq returns to ring 3; int 0x81 through a DPL-0 gate raises #GP(0x81*8+2).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InterruptFromRing3UsesTssRsp0AndFrameHoldsUserStack(bool deterministic)
    {
        using var g = new Guest(control: deterministic ? new Deterministic(quantum: 7) : new FreeRunning());
        g.Rsp0 = Guest.Rsp0Top - 8;
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: true);
        var user = a.CreateLabel();
        var after80 = a.CreateLabel();
        var int81 = a.CreateLabel();
        const ulong userRsp = Guest.UStackTop - 0x18;
        g.Prologue();
        g.LoadCr3(pt.Root);
        g.EnterUser(user, userRsp: userRsp);
        a.Label(ref user);
        a.mov(rax, 5);
        a.@int(0x80);
        a.Label(ref after80);
        a.mov(__qword_ptr[Guest.UData], rax);
        a.mov(rax, 0);
        a.mov(ax, cs);
        a.mov(__qword_ptr[Guest.UData + 8], rax);
        a.mov(__qword_ptr[Guest.UData + 16], rsp);
        a.Label(ref int81);
        a.@int(0x81);
        a.jmp(int81);

        g.HandlerHere(0x80, dpl: 3);
        RecordFrame(g, 10);
        a.mov(rax, 0);
        a.mov(ax, ss);
        g.Store(17, rax);
        a.mov(rax, 0x55);
        a.iretq();
        g.HandlerHere(0x81, dpl: 0); // not reachable from ring 3 by int n
        g.Exit(81);
        g.HandlerHere(Vectors.GP);
        a.pop(rax);
        g.Store(20, rax);
        RecordFrame(g, 21);
        g.Exit(0);

        var r = g.Run();
        AssertExited(r);
        ulong frameRsp = ((Guest.Rsp0Top - 8) & ~0xFUL) - 40;
        Assert.Equal(frameRsp, g.Slot(10));
        Assert.Equal(g.Addr(after80), g.Slot(11));
        Assert.Equal((ulong)Guest.UCs, g.Slot(12));
        Assert.Equal(0x202UL, g.Slot(13));
        Assert.Equal(userRsp, g.Slot(14));
        Assert.Equal((ulong)Guest.UDs, g.Slot(15));
        Assert.Equal(0UL, g.Slot(17));                        // SS = null selector with RPL 0 after the CPL change
        Assert.Equal(0x55UL, g.ReadU64(Guest.UData));         // iretq returned to ring 3 with the handler's rax
        Assert.Equal((ulong)Guest.UCs, g.ReadU64(Guest.UData + 8));
        Assert.Equal(userRsp, g.ReadU64(Guest.UData + 16));
        Assert.Equal(0x81UL * 8 + 2, g.Slot(20));             // #GP error code: IDT, vector 0x81
        Assert.Equal(frameRsp, g.Slot(21));                   // (after popping the error code)
        Assert.Equal(g.Addr(int81), g.Slot(22));              // fault: RIP of the int instruction
        Assert.Equal((ulong)Guest.UCs, g.Slot(23));
        Assert.Equal(userRsp, g.Slot(25));
    }

    [Fact]
    public void IstGateSwitchesStackEvenWithoutCplChange()
    {
        using var g = new Guest();
        var a = g.A;
        g.Prologue();
        a.@int(0x82);
        g.Exit(1);
        g.HandlerHere(0x82, ist: 1);
        RecordFrame(g, 0);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(Guest.IstTop - 40, g.Slot(0));
        Assert.Equal(Guest.KStackTop, g.Slot(4));
    }

    /// <summary>Sets up a one-shot timer (vector 0x40, divide by 1) that expires `count` instructions after the wrmsr.</summary>
    static void ArmTimer(Guest g, uint count, bool periodic = false, uint vector = 0x40, uint divide = 0xB)
    {
        g.Wrmsr(0x83E, divide);
        g.Wrmsr(0x832, vector | (periodic ? 1u << 17 : 0));
        g.Wrmsr(0x838, count);
    }

    /// <summary>
    /// With the timer interrupt already pending and IF = 0, `sti; inc rbx` takes the interrupt only
    /// after the inc (the sti shadow); popfq setting IF has no shadow.
    /// </summary>
    [Theory]
    [InlineData("sti", false)]
    [InlineData("sti", true)]
    [InlineData("popfq", false)]
    [InlineData("popfq", true)]
    public void StiShadowDelaysPendingInterruptByOneInstruction(string how, bool deterministic)
    {
        using var g = new Guest(control: deterministic ? new Deterministic(quantum: 3) : new FreeRunning());
        var a = g.A;
        var i1 = a.CreateLabel();
        var i2 = a.CreateLabel();
        g.Prologue();
        ArmTimer(g, 1);
        for (int i = 0; i < 5; i++) a.nop(); // the timer expires; IF = 0 keeps it pending
        a.xor(ebx, ebx);
        if (how == "sti") a.sti();
        else { a.push(0x202); a.popfq(); }
        a.Label(ref i1);
        a.inc(rbx);
        a.Label(ref i2);
        a.inc(rbx);
        a.inc(rbx);
        g.Exit(1);
        g.HandlerHere(0x40);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(0, rax);
        g.Store(1, rbx);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        if (how == "sti")
        {
            Assert.Equal(g.Addr(i2), g.Slot(0));
            Assert.Equal(1UL, g.Slot(1));
        }
        else
        {
            Assert.Equal(g.Addr(i1), g.Slot(0));
            Assert.Equal(0UL, g.Slot(1));
        }
    }

    /// <summary>
    /// IF = 1 and the timer expires right after the instruction following its wrmsr. If that
    /// instruction is mov ss, the interrupt waits one more instruction (the mov ss shadow).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MovSsShadowDelaysTimerInterrupt(bool movSs)
    {
        using var g = new Guest(control: new Deterministic(quantum: 1000));
        var a = g.A;
        var i2 = a.CreateLabel();
        var i3 = a.CreateLabel();
        g.Prologue();
        a.mov(r8d, (uint)Guest.KDs);
        a.xor(ebx, ebx);
        a.sti();
        a.nop();
        g.Wrmsr(0x83E, 0xB);
        g.Wrmsr(0x832, 0x40);
        a.mov(ecx, 0x838);
        a.mov(eax, 1);
        a.xor(edx, edx);
        a.wrmsr();
        if (movSs) a.mov(ss, r8w); else a.nop();
        a.Label(ref i2);
        a.inc(rbx);
        a.Label(ref i3);
        a.inc(rbx);
        g.Exit(1);
        g.HandlerHere(0x40);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(0, rax);
        g.Store(1, rbx);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(g.Addr(movSs ? i3 : i2), g.Slot(0));
        Assert.Equal(movSs ? 1UL : 0UL, g.Slot(1));
    }
}
