using Harness.Smp.Cpu;
using Xunit;
using static Harness.Smp.Tests.SystemTests.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class MiscSystemTests
{

    /// <summary>
    /// The same physical code page executed through two virtual addresses (identity and the boot
    /// map's -2 GiB alias): RIP-relative results and return addresses must follow the virtual address used.
    /// </summary>
    [Fact]
    public void AliasedCodeRunsAtItsOwnVirtualAddress()
    {
        using var g = new Guest();
        var a = g.A;
        var fn = a.CreateLabel();
        g.Prologue();
        a.lea(rbx, __[fn]);
        a.call(rbx);                                   // identity address first: decodes the block
        g.Store(0, rax);
        a.mov(rcx, 0xFFFF_FFFF_8000_0000UL);
        a.add(rbx, rcx);
        a.call(rbx);                                   // same physical bytes through the alias
        g.Store(1, rax);
        g.Exit(0);
        a.Label(ref fn);
        a.lea(rax, __[fn]);                            // rip-relative: the label's address at this VA
        a.ret();
        var r = g.Run();
        AssertExited(r);
        ulong f = g.Addr(fn);
        Assert.Equal(f, g.Slot(0));
        Assert.Equal(0xFFFF_FFFF_8000_0000UL + f, g.Slot(1));
    }

    /// <summary>popfq at CPL 3 with IOPL 0 silently keeps IF; cli/sti work at CPL 3 when IOPL = 3.</summary>
    [Fact]
    public void PopfqAtCpl3CannotChangeIfButIopl3AllowsCli()
    {
        using var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: true);
        var user = a.CreateLabel();
        var user2 = a.CreateLabel();
        g.Prologue();
        g.LoadCr3(pt.Root);
        g.EnterUser(user, rflags: 0x202);
        a.Label(ref user);
        a.push(0x002 | 0x3000);                        // IF = 0, IOPL = 3: both ignored at CPL 3
        a.popfq();
        a.pushfq();
        a.pop(rax);
        a.mov(__qword_ptr[Guest.UData], rax);
        a.@int(0x80);                                  // kernel re-enters ring 3 with IOPL 3
        a.Label(ref user2);
        a.cli();
        a.pushfq();
        a.pop(rax);
        a.mov(__qword_ptr[Guest.UData + 8], rax);
        a.@int(0x81);
        g.HandlerHere(0x80, dpl: 3);
        a.add(rsp, 40);
        g.EnterUser(user2, rflags: 0x3202);
        g.HandlerHere(0x81, dpl: 3);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(0x202UL, g.ReadU64(Guest.UData));
        Assert.Equal(0x3002UL, g.ReadU64(Guest.UData + 8));
    }

    /// <summary>iretq from ring 3 to a ring-0 code selector is refused with #GP(selector).</summary>
    [Fact]
    public void IretqToMorePrivilegedLevelRaisesGp()
    {
        using var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: true);
        var user = a.CreateLabel();
        var at = a.CreateLabel();
        g.Prologue();
        g.LoadCr3(pt.Root);
        g.EnterUser(user);
        a.Label(ref user);
        a.push(Guest.KDs);
        a.push(0);
        a.push(0x2);
        a.push(Guest.KCs);
        a.lea(rax, __[at]);
        a.push(rax);
        a.Label(ref at);
        a.iretq();
        g.HandlerHere(Vectors.GP);
        a.pop(rax);
        g.Store(0, rax);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(1, rax);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal((ulong)Guest.KCs, g.Slot(0));
        Assert.Equal(g.Addr(at), g.Slot(1));
        Assert.Equal(0, g.M.Vcpus[0].Cpl); // the handler ran at CPL 0
    }

    /// <summary>ltr marks the TSS descriptor busy; loading a busy TSS again raises #GP(selector).</summary>
    [Fact]
    public void LtrOfBusyTssRaisesGp()
    {
        using var g = new Guest();
        var a = g.A;
        var at = a.CreateLabel();
        g.Prologue();                                  // ltr 0x30
        a.mov(rax, __qword_ptr[Guest.Gdt + Guest.TssSel]);
        g.Store(1, rax);
        a.mov(ax, Guest.TssSel);
        a.Label(ref at);
        a.ltr(ax);
        g.Exit(1);
        g.HandlerHere(Vectors.GP);
        a.pop(rax);
        g.Store(0, rax);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(0xBUL, (g.Slot(1) >> 40) & 0xF);  // busy 64-bit TSS
        Assert.Equal((ulong)Guest.TssSel, g.Slot(0));
    }

    /// <summary>swapgs exchanges GS.base with KERNEL_GS_BASE.</summary>
    [Fact]
    public void SwapgsExchangesBases()
    {
        using var g = new Guest();
        var a = g.A;
        g.Prologue();
        g.Wrmsr(0xC0000101, 0x1111_0000);
        g.Wrmsr(0xC0000102, 0x2222_0000);
        a.swapgs();
        g.Rdmsr(0xC0000101);
        g.Store(0, rax);
        g.Rdmsr(0xC0000102);
        g.Store(1, rax);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(0x2222_0000UL, g.Slot(0));
        Assert.Equal(0x1111_0000UL, g.Slot(1));
    }

    [Fact]
    public void RdtscAtCpl3WithTsdRaisesGp()
    {
        using var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: true);
        var at = a.CreateLabel();
        g.Prologue();
        g.LoadCr3(pt.Root);
        a.mov(rax, cr4);
        a.or(rax, 4);
        a.mov(cr4, rax);
        a.rdtsc();                                     // allowed at CPL 0
        g.EnterUser(at);
        a.Label(ref at);
        a.rdtsc();
        a.jmp(at);
        g.HandlerHere(Vectors.GP);
        a.pop(rax);
        g.Store(0, rax);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(1, rax);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(0UL, g.Slot(0));
        Assert.Equal(g.Addr(at), g.Slot(1));
    }

    /// <summary>int3 is a trap: the frame's RIP is the instruction after it.</summary>
    [Fact]
    public void Int3FrameRipIsNextInstruction()
    {
        using var g = new Guest();
        var a = g.A;
        var after = a.CreateLabel();
        g.Prologue();
        a.int3();
        a.Label(ref after);
        g.Exit(1);
        g.HandlerHere(Vectors.BP);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(0, rax);
        g.Exit(0);
        var r = g.Run();
        AssertExited(r);
        Assert.Equal(g.Addr(after), g.Slot(0));
    }
}
