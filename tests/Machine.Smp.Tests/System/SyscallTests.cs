using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class SyscallTests
{
    const uint MsrStar = 0xC0000081, MsrLstar = 0xC0000082, MsrFmask = 0xC0000084;

    /// <summary>Emits wrmsr msr, address-of(label) (clobbers rax, rcx, rdx).</summary>
    static void WrmsrLabel(Guest g, uint msr, Label l)
    {
        var a = g.A;
        a.lea(rax, __[l]);
        a.mov(rdx, rax);
        a.shr(rdx, 32);
        a.mov(ecx, msr);
        a.wrmsr();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SyscallSysretRoundTrip(bool deterministic)
    {
        using var g = new Guest(control: deterministic ? new Deterministic(quantum: 5) : new FreeRunning());
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: true);
        var user = a.CreateLabel();
        var after1 = a.CreateLabel();
        var after2 = a.CreateLabel();
        var entry = a.CreateLabel();
        var exitPath = a.CreateLabel();
        const ulong savedUserRsp = Guest.Data + 0x200;
        g.Prologue();
        g.LoadCr3(pt.Root);
        g.Wrmsr(MsrStar, Guest.StarValue);
        WrmsrLabel(g, MsrLstar, entry);
        g.Wrmsr(MsrFmask, (ulong)(Rflags.IF | Rflags.DF));
        g.EnterUser(user, rflags: 0x602); // IF and DF set in ring 3

        a.Label(ref user);
        a.mov(rax, 1);
        a.syscall();
        a.Label(ref after1);
        a.mov(__qword_ptr[Guest.UData], rax);
        a.mov(rax, 0);
        a.mov(ax, cs);
        a.mov(__qword_ptr[Guest.UData + 8], rax);
        a.mov(ax, ss);
        a.mov(__qword_ptr[Guest.UData + 16], rax);
        a.pushfq();
        a.pop(rax);
        a.mov(__qword_ptr[Guest.UData + 24], rax);
        a.mov(__qword_ptr[Guest.UData + 32], rsp);
        a.mov(rax, 2);
        a.syscall();
        a.Label(ref after2);
        a.jmp(after2);

        a.Label(ref entry);
        a.mov(__qword_ptr[savedUserRsp], rsp);
        a.mov(rsp, Guest.KStackTop);
        a.pushfq();                          // before any flag-changing instruction
        a.pop(r9);
        a.imul(r10, rax, 64);                // slot base: 8 * syscall number (flags clobbered after pushfq: fine)
        a.add(r10, (int)Guest.Data);
        a.mov(__qword_ptr[r10 + 0], rcx);
        a.mov(__qword_ptr[r10 + 8], r11);
        a.mov(__qword_ptr[r10 + 16], r9);
        a.xor(r9d, r9d);
        a.mov(r9w, cs);
        a.mov(__qword_ptr[r10 + 24], r9);
        a.mov(r9w, ss);
        a.mov(__qword_ptr[r10 + 32], r9);
        a.cmp(rax, 2);
        a.je(exitPath);
        a.mov(rax, 0x1001);
        a.mov(rsp, __qword_ptr[savedUserRsp]);
        a.sysretq();
        a.Label(ref exitPath);
        g.Exit(0);

        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason}: {r.Message}");
        // First syscall (slots 8..12): RCX = return address, R11 = user RFLAGS, FMASK applied, CPL 0 selectors from STAR.
        Assert.Equal(g.Addr(after1), g.Slot(8));
        Assert.Equal(0x602UL, g.Slot(9));
        Assert.Equal(0x2UL, g.Slot(10));
        Assert.Equal((ulong)Guest.KCs, g.Slot(11));
        Assert.Equal((ulong)Guest.KDs, g.Slot(12));
        // Back in ring 3 after sysretq.
        Assert.Equal(0x1001UL, g.ReadU64(Guest.UData));
        Assert.Equal((ulong)Guest.UCs, g.ReadU64(Guest.UData + 8));
        Assert.Equal((ulong)Guest.UDs, g.ReadU64(Guest.UData + 16));
        Assert.Equal(0x602UL, g.ReadU64(Guest.UData + 24));
        Assert.Equal(Guest.UStackTop, g.ReadU64(Guest.UData + 32));
        // Second syscall (slots 16..20).
        Assert.Equal(g.Addr(after2), g.Slot(16));
        Assert.Equal(0x602UL, g.Slot(17));
        Assert.Equal((ulong)Guest.KCs, g.Slot(19));
        Assert.Equal(0, g.M.Vcpus[0].Cpl);
    }

    [Fact]
    public void SyscallWithSceClearRaisesUd()
    {
        using var g = new Guest();
        var a = g.A;
        var at = a.CreateLabel();
        g.Prologue();
        a.mov(ecx, 0xC0000080u);
        a.rdmsr();
        a.and(eax, ~1);
        a.wrmsr();
        a.Label(ref at);
        a.syscall();
        g.Exit(1);
        g.HandlerHere(Vectors.UD);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(0, rax);
        g.Exit(0);
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason}: {r.Message}");
        Assert.Equal(g.Addr(at), g.Slot(0));
    }
}
