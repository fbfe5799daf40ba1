using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

public class PagingTests
{
    const ulong Unmapped = 0x1000_0000;      // no PD entry at all
    const ulong NotPresentPte = 0x1000_1000; // PTE exists, P = 0
    const ulong ReadOnly = 0x1000_2000;      // P only
    const ulong NxPage = 0x1000_3000;        // P | RW | NX, holds a ret
    const ulong PageA = 0x200000, PageB = 0x201000, CodePage = 0x202000;

    /// <summary>
    /// Runs one faulting access under our own page tables. The #PF handler stores the error code
    /// (slot 0), CR2 (1), the frame's RIP (2) and CS (3), and exits 0; no fault exits 99.
    /// </summary>
    static (RunResult r, Guest g, ulong faultIp) RunFault(string scenario, Action<Guest>? extraSetup = null)
    {
        var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: true);
        pt.Map(NotPresentPte, PageA, 0);
        pt.Map(ReadOnly, PageA, PageTables.P | PageTables.US);
        pt.Map(NxPage, CodePage, PageTables.P | PageTables.RW | PageTables.NX | PageTables.US);
        g.M.Memory.Write(CodePage, [0xC3]); // ret
        var fault = a.CreateLabel("fault");
        var user = a.CreateLabel("user");
        g.Prologue();
        g.LoadCr3(pt.Root);
        extraSetup?.Invoke(g);
        bool isUser = scenario.StartsWith("user");
        if (isUser) g.EnterUser(user);
        a.Label(ref user);
        a.mov(rbx, scenario.Contains("nx") ? NxPage : scenario.Contains("super") ? Guest.Data : scenario.Contains("ro") ? ReadOnly : scenario.Contains("pte") ? NotPresentPte : Unmapped);
        a.Label(ref fault);
        if (scenario.EndsWith("read")) a.mov(rax, __qword_ptr[rbx]);
        else if (scenario.EndsWith("write")) a.mov(__qword_ptr[rbx], rax);
        else if (scenario.EndsWith("fetch")) a.call(rbx);
        else throw new ArgumentException(scenario);
        a.nop();
        if (isUser) { a.mov(rax, 99); a.syscall(); } // never returns usefully: no LSTAR; exits via #PF/#GP paths anyway
        g.Exit(99);
        g.HandlerHere(Vectors.PF);
        a.pop(rax);
        g.Store(0, rax);
        a.mov(rax, cr2);
        g.Store(1, rax);
        a.mov(rax, __qword_ptr[rsp]);
        g.Store(2, rax);
        a.mov(rax, __qword_ptr[rsp + 8]);
        g.Store(3, rax);
        g.Exit(0);
        var r = g.Run();
        ulong ip = g.Addr(fault);
        return (r, g, ip);
    }

    [Theory]
    [InlineData("sup-unmapped-read", 0x0UL, Unmapped)]
    [InlineData("sup-unmapped-write", 0x2UL, Unmapped)]
    [InlineData("sup-pte-read", 0x0UL, NotPresentPte)]
    [InlineData("sup-pte-write", 0x2UL, NotPresentPte)]
    [InlineData("sup-ro-write", 0x3UL, ReadOnly)]
    [InlineData("user-super-read", 0x5UL, Guest.Data)]
    [InlineData("user-super-write", 0x7UL, Guest.Data)]
    [InlineData("user-ro-write", 0x7UL, ReadOnly)]
    [InlineData("user-pte-read", 0x4UL, NotPresentPte)]
    [InlineData("user-unmapped-write", 0x6UL, Unmapped)]
    public void DataAccessFaultReportsCr2AndErrorCode(string scenario, ulong err, ulong cr2)
    {
        var (r, g, ip) = RunFault(scenario);
        using (g)
        {
            Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
            Assert.Equal(err, g.Slot(0));
            Assert.Equal(cr2, g.Slot(1));
            Assert.Equal(ip, g.Slot(2)); // a fault: RIP of the faulting instruction
            Assert.Equal(scenario.StartsWith("user") ? Guest.UCs : Guest.KCs, g.Slot(3));
        }
    }

    [Theory]
    [InlineData("sup-nx-fetch", 0x11UL, NxPage)]
    [InlineData("user-nx-fetch", 0x15UL, NxPage)]
    [InlineData("sup-unmapped-fetch", 0x10UL, Unmapped)]
    [InlineData("user-super-fetch", 0x15UL, Guest.Data)]
    public void InstructionFetchFaultSetsIBit(string scenario, ulong err, ulong cr2)
    {
        var (r, g, _) = RunFault(scenario);
        using (g)
        {
            Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
            Assert.Equal(err, g.Slot(0));
            Assert.Equal(cr2, g.Slot(1));
            Assert.Equal(cr2, g.Slot(2)); // the fetch faults at the target itself
        }
    }

    /// <summary>SDM 4.7: the I/D bit is set only when EFER.NXE = 1 (or CR4.SMEP = 1); with NXE clear a fetch fault reports 0.</summary>
    [Fact]
    public void FetchFaultHasNoIBitWhenEferNxeIsClear()
    {
        var (r, g, _) = RunFault("sup-unmapped-fetch", g =>
        {
            g.A.mov(ecx, 0xC0000080u);
            g.A.rdmsr();
            g.A.and(eax, ~(1 << 11));
            g.A.wrmsr();
        });
        using (g)
        {
            Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
            Assert.Equal(Unmapped, g.Slot(1));
            Assert.Equal(0x0UL, g.Slot(0));
        }
    }

    [Fact]
    public void SupervisorWriteToReadOnlyPageSucceedsWithWpClear()
    {
        using var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: false);
        pt.Map(ReadOnly, PageA, PageTables.P);
        g.Prologue();
        g.LoadCr3(pt.Root);
        a.mov(rax, cr0);
        a.and(rax, ~(1 << 16)); // WP off
        a.mov(cr0, rax);
        a.mov(rbx, ReadOnly);
        a.mov(rax, 0x5A5A_5A5AUL);
        a.mov(__qword_ptr[rbx], rax);
        g.Exit(0);
        g.HandlerHere(Vectors.PF);
        g.Exit(1);
        var r = g.Run();
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(0, r.ExitStatus);
        Assert.Equal(0x5A5A_5A5AUL, g.ReadU64(PageA));
    }

    [Fact]
    public void AccessedAndDirtyBitsAreSetByTheWalk()
    {
        using var g = new Guest();
        var a = g.A;
        var pt = g.NewPageTables().Standard(user: false);
        ulong pteR = pt.Map(0x1000_5000, PageA, PageTables.P | PageTables.RW);
        ulong pteW = pt.Map(0x1000_6000, PageB, PageTables.P | PageTables.RW);
        ulong pteN = pt.Map(0x1000_7000, PageB, PageTables.P | PageTables.RW);
        g.Prologue();
        g.LoadCr3(pt.Root);
        a.mov(rax, __qword_ptr[0x1000_5000]);
        a.mov(__qword_ptr[0x1000_6000], rax);
        g.Exit(0);
        var r = g.Run();
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(PageTables.A, g.ReadU64(pteR) & (PageTables.A | PageTables.D));
        Assert.Equal(PageTables.A | PageTables.D, g.ReadU64(pteW) & (PageTables.A | PageTables.D));
        Assert.Equal(0UL, g.ReadU64(pteN) & (PageTables.A | PageTables.D));
    }

    /// <summary>
    /// The TLB caches translations until invlpg or a CR3 load: a PTE change without invalidation
    /// is not seen (the guest's bug, as on hardware), invlpg makes it visible, and so does mov cr3.
    /// </summary>
    [Fact]
    public void TlbKeepsStaleTranslationUntilInvlpgOrCr3Reload()
    {
        using var g = new Guest();
        var a = g.A;
        const ulong X = 0x2000_0000;
        var pt = g.NewPageTables().Standard(user: false);
        ulong pte = pt.Map(X, PageA, PageTables.P | PageTables.RW);
        g.M.Memory.WriteU64(PageA, 0xAAAA);
        g.M.Memory.WriteU64(PageB, 0xBBBB);
        g.Prologue();
        g.LoadCr3(pt.Root);
        a.mov(rbx, X);
        a.mov(rsi, pte);
        a.mov(rax, __qword_ptr[rbx]);            // fills the TLB with X -> A
        g.Store(0, rax);
        a.mov(rax, PageB | PageTables.P | PageTables.RW);
        a.mov(__qword_ptr[rsi], rax);            // X -> B, no invalidation
        a.mov(rax, __qword_ptr[rbx]);
        g.Store(1, rax);                         // stale: A
        a.invlpg(__[rbx]);
        a.mov(rax, __qword_ptr[rbx]);
        g.Store(2, rax);                         // B
        a.mov(rax, PageA | PageTables.P | PageTables.RW);
        a.mov(__qword_ptr[rsi], rax);            // X -> A again, no invalidation
        a.mov(rax, __qword_ptr[rbx]);
        g.Store(3, rax);                         // stale: B
        a.mov(rax, cr3);
        a.mov(cr3, rax);
        a.mov(rax, __qword_ptr[rbx]);
        g.Store(4, rax);                         // A
        // invlpg of a different page leaves X's stale entry in place.
        a.mov(rax, PageB | PageTables.P | PageTables.RW);
        a.mov(__qword_ptr[rsi], rax);
        a.mov(rax, X + 0x1000);
        a.invlpg(__[rax]);
        a.mov(rax, __qword_ptr[rbx]);
        g.Store(5, rax);                         // stale: A
        g.Exit(0);
        var r = g.Run();
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal([0xAAAAUL, 0xAAAA, 0xBBBB, 0xBBBB, 0xAAAA, 0xAAAA], Enumerable.Range(0, 6).Select(i => g.Slot(i)).ToArray());
    }

    /// <summary>The same stale-TLB rule for writes: a write after a PTE change lands in the old page until invlpg.</summary>
    [Fact]
    public void StaleTlbAppliesToWritesToo()
    {
        using var g = new Guest();
        var a = g.A;
        const ulong X = 0x2000_0000;
        var pt = g.NewPageTables().Standard(user: false);
        ulong pte = pt.Map(X, PageA, PageTables.P | PageTables.RW);
        g.Prologue();
        g.LoadCr3(pt.Root);
        a.mov(rbx, X);
        a.mov(rsi, pte);
        a.mov(__qword_ptr[rbx], 1);              // fills the write TLB (dirty set)
        a.mov(rax, PageB | PageTables.P | PageTables.RW);
        a.mov(__qword_ptr[rsi], rax);
        a.mov(__qword_ptr[rbx], 2);              // stale: lands in A
        a.invlpg(__[rbx]);
        a.mov(__qword_ptr[rbx], 3);              // lands in B
        g.Exit(0);
        var r = g.Run();
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(2UL, g.ReadU64(PageA));
        Assert.Equal(3UL, g.ReadU64(PageB));
    }
}
