using Harness.Smp.Cpu;
using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class PrivilegeTests
{
    static readonly Dictionary<string, Action<Assembler>> Ring3 = new()
    {
        ["hlt"] = a => a.hlt(),
        ["wrmsr"] = a => a.wrmsr(),
        ["rdmsr"] = a => a.rdmsr(),
        ["mov cr3, rax"] = a => a.mov(cr3, rax),
        ["mov rax, cr0"] = a => a.mov(rax, cr0),
        ["lidt"] = a => a.lidt(__[Guest.Idtr]),
        ["lgdt"] = a => a.lgdt(__[Guest.Gdtr]),
        ["ltr"] = a => a.ltr(ax),
        ["cli"] = a => a.cli(),
        ["sti"] = a => a.sti(),
        ["out"] = a => a.@out(0xF4, eax),
        ["in"] = a => a.@in(al, 0x60),
        ["invlpg"] = a => a.invlpg(__[rsp]),
        ["swapgs"] = a => a.swapgs(),
        ["sysretq"] = a => a.sysretq(),
        ["wbinvd"] = a => a.wbinvd(),
    };

    public static IEnumerable<object[]> Ring3Cases => Ring3.Keys.Select(k => new object[] { k });

    /// <summary>Privileged instructions at CPL 3 raise #GP(0) with RIP of the instruction (the exit port must not be reachable).</summary>
    [Theory]
    [MemberData(nameof(Ring3Cases))]
    public void PrivilegedInstructionAtCpl3RaisesGp(string insn)
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
        a.mov(eax, 77);      // if `out 0xF4` were allowed the machine would exit 77
        a.mov(ecx, 0x10);
        a.mov(rcx, 0x10);
        a.Label(ref at);
        Ring3[insn](a);
        a.mov(rax, 0x0000_8000_0000_0000UL); // a non-canonical access: #GP too, but with another RIP
        a.mov(rax, __qword_ptr[rax]);
        g.HandlerHere(Vectors.GP);
        a.pop(rax);
        g.Store(0, rax);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(1, rax);
        a.mov(rax, __qword_ptr[rsp + 8]);
        g.Store(2, rax);
        g.Exit(0);
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{insn}: {r.Reason} {r.ExitStatus}: {r.Message}");
        Assert.Equal(0UL, g.Slot(0));
        Assert.Equal(g.Addr(at), g.Slot(1));
        Assert.Equal((ulong)Guest.UCs, g.Slot(2));
    }

    public static IEnumerable<object[]> MsrCases =>
    [
        ["rdmsr", 0x12345UL, 0UL],
        ["rdmsr", 0xC0000090UL, 0UL],
        ["wrmsr", 0x12345UL, 0UL],
        ["wrmsr", 0xC0000080UL, 1UL << 20],              // EFER reserved bit
        ["wrmsr", 0xC0000082UL, 0x0000_8000_0000_0000UL], // LSTAR non-canonical
        ["wrmsr", 0x80BUL, 1UL],                          // x2APIC EOI must be written with 0
    ];

    [Theory]
    [MemberData(nameof(MsrCases))]
    public void BadMsrAccessAtCpl0RaisesGp0(string op, ulong msr, ulong value)
    {
        using var g = new Guest();
        var a = g.A;
        var at = a.CreateLabel();
        g.Prologue();
        a.mov(ecx, (uint)msr);
        a.mov(eax, (uint)value);
        a.mov(edx, (uint)(value >> 32));
        a.Label(ref at);
        if (op == "rdmsr") a.rdmsr(); else a.wrmsr();
        g.Exit(1);
        g.HandlerHere(Vectors.GP);
        a.pop(rax);
        g.Store(0, rax);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(1, rax);
        g.Exit(0);
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
        Assert.Equal(0UL, g.Slot(0));
        Assert.Equal(g.Addr(at), g.Slot(1));
    }

    [Fact]
    public void KnownMsrsRoundTripAtCpl0()
    {
        using var g = new Guest();
        var a = g.A;
        g.Prologue();
        g.Wrmsr(0xC0000081, 0x0023_0010_0000_0000UL);
        g.Rdmsr(0xC0000081);
        g.Store(0, rax);
        g.Wrmsr(0xC0000084, 0xFFFF_FFFF_0000_0700UL); // FMASK keeps the low 32 bits
        g.Rdmsr(0xC0000084);
        g.Store(1, rax);
        g.Rdmsr(0x802);                               // APIC ID
        g.Store(2, rax);
        g.Exit(0);
        var r = g.Run();
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(0x0023_0010_0000_0000UL, g.Slot(0));
        Assert.Equal(0x700UL, g.Slot(1));
        Assert.Equal(0UL, g.Slot(2));
    }
}
