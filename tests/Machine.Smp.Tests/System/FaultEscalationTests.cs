using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class FaultEscalationTests
{
    [Fact]
    public void Ud2WithoutIdtTripleFaultsWithReport()
    {
        using var g = new Guest();
        var a = g.A;
        var at = a.CreateLabel();
        a.nop();
        a.Label(ref at);
        a.ud2();
        g.Exit(0);
        var r = g.Run();
        Assert.Equal(StopReason.TripleFault, r.Reason);
        ulong rip = g.Addr(at);
        Assert.Contains("vCPU 0", r.Message);
        Assert.Contains("#UD", r.Message);
        Assert.Contains($"0x{rip:x}", r.Message);
        Assert.Contains("0f 0b", r.Message);
        Assert.Contains("#DF", r.Message); // #GP delivering #UD, #GP delivering #GP -> #DF -> triple
        Assert.Equal(rip, g.M.Vcpus[0].Rip);
    }

    /// <summary>A #PF whose gate is not present raises #NP while delivering it: #PF + contributory = #DF, delivered with error code 0.</summary>
    [Fact]
    public void PageFaultWithBadGateEscalatesToDoubleFault()
    {
        using var g = new Guest();
        var a = g.A;
        var at = a.CreateLabel();
        var pf = a.CreateLabel();
        g.Prologue();
        a.mov(rbx, 0x0000_2000_0000_0000UL); // canonical, not mapped at boot
        a.Label(ref at);
        a.mov(rax, __qword_ptr[rbx]);
        g.Exit(1);
        a.Label(ref pf);
        g.Exit(2);
        g.Gate(Vectors.PF, pf, present: false);
        g.HandlerHere(Vectors.DF, ist: 1);
        a.pop(rax);
        g.Store(0, rax);
        a.mov(rax, cr2);
        g.Store(1, rax);
        g.Store(2, rsp);
        g.Exit(0);
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
        Assert.Equal(0UL, g.Slot(0));                       // #DF error code
        Assert.Equal(0x0000_2000_0000_0000UL, g.Slot(1));  // CR2 from the original #PF
        Assert.Equal(Guest.IstTop - 40, g.Slot(2));
    }

    /// <summary>The IDT itself unmapped: #PF while delivering #PF -> #DF -> #PF while delivering #DF -> triple fault.</summary>
    [Fact]
    public void PageFaultWithUnmappedIdtTripleFaults()
    {
        using var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: false);
        pt.Map(Guest.Idt, Guest.Idt, 0); // IDT page not present
        g.Prologue();
        g.LoadCr3(pt.Root);
        a.mov(rax, __qword_ptr[0x1000_0000]);
        g.Exit(0);
        g.HandlerHere(Vectors.PF);
        g.Exit(1);
        var r = g.Run();
        Assert.Equal(StopReason.TripleFault, r.Reason);
        Assert.Contains("#PF", r.Message);
        Assert.Contains("0x10000000", r.Message);
        Assert.Contains("#DF", r.Message);
        Assert.Contains($"0x{Guest.Idt + 14 * 16:x}", r.Message); // the faulting IDT access
    }

    /// <summary>A #PF on the handler's stack push (kernel stack unmapped) from a #GP: #GP then #PF is benign-ordered -> #DF? No: contributory then #PF delivers #PF.</summary>
    [Fact]
    public void GpWhoseStackPushFaultsDeliversPageFault()
    {
        using var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: false);
        pt.Map(0x3F_F000, 0x3F_F000, 0); // the page under our bad stack
        g.Prologue();
        g.LoadCr3(pt.Root);
        a.mov(rsp, 0x40_0000UL);         // pushes go to 0x3FFFxx: not present
        a.mov(rax, 0x0000_8000_0000_0000UL);
        a.mov(rax, __qword_ptr[rax]);    // #GP (non-canonical)
        g.Exit(1);
        g.HandlerHere(Vectors.GP);
        g.Exit(2);
        g.HandlerHere(Vectors.PF, ist: 1);
        a.pop(rax);
        g.Store(0, rax);
        a.mov(rax, cr2);
        g.Store(1, rax);
        g.Exit(0);
        g.HandlerHere(Vectors.DF, ist: 1);
        g.Exit(8);
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
        Assert.Equal(0x2UL, g.Slot(0));            // supervisor write, not present
        Assert.Equal(0x3F_FFF8UL, g.Slot(1));      // the first push (SS) at RSP - 8
    }

    /// <summary>
    /// An external interrupt whose gate is not present raises #NP with the EXT bit:
    /// error code = vector * 8 + 2 (IDT) + 1 (EXT).
    /// </summary>
    [Fact]
    public void ExternalInterruptThroughNotPresentGateRaisesNpWithExtBit()
    {
        using var g = new Guest();
        var a = g.A;
        var bad = a.CreateLabel();
        g.Prologue();
        g.Wrmsr(0x830, 0x40040);         // self IPI, vector 0x40
        a.sti();
        a.nop();
        a.nop();
        g.Exit(1);
        a.Label(ref bad);
        g.Exit(2);
        g.Gate(0x40, bad, present: false);
        g.HandlerHere(Vectors.NP);
        a.pop(rax);
        g.Store(0, rax);
        g.Exit(0);
        var r = g.Run();
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
        Assert.Equal(0x40UL * 8 + 3, g.Slot(0));
    }

    /// <summary>An external interrupt with no IDT at all: #GP(ext) -> #GP -> #DF -> triple fault, reported, not a host error.</summary>
    [Fact]
    public void ExternalInterruptWithoutIdtTripleFaults()
    {
        using var g = new Guest();
        var a = g.A;
        g.Wrmsr(0x830, 0x40040);
        a.sti();
        a.nop();
        g.Exit(0);
        var r = g.Run();
        Assert.Equal(StopReason.TripleFault, r.Reason);
        Assert.Contains("vCPU 0", r.Message);
    }
}
