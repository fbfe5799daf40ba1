using Harness.Tests.Shared;
using Harness.Smp.Control;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

/// <summary>The host-agent seam: StartRip (BSP and AP start RIPs) and BlockDecoded; unhandled vmcalls.</summary>
public class HookTests
{
    [Fact]
    public void StartRipRedirectsTheBspAndEveryApAndBlockDecodedSeesIt()
    {
        using var g = new Guest(2, new Deterministic(quantum: 100), maxInstructions: 2_000_000);
        var a = g.A;
        var ap = a.CreateLabel(); var apReal = a.CreateLabel(); var bspReal = a.CreateLabel(); var wait = a.CreateLabel();
        // Entry: never runs (the filter moves the BSP to bspReal).
        g.Exit(7);
        a.Label(ref bspReal);
        g.Prologue();
        ulong mb = Guest.Mailbox(1);
        a.lea(rax, __[ap]);
        a.mov(__qword_ptr[mb], rax);
        a.mov(rax, Guest.ApStackBase + 0x4000);
        a.mov(__qword_ptr[mb + 8], rax);
        a.mov(__qword_ptr[mb + 16], 0);
        g.Wrmsr(0x830, (1UL << 32) | 0x600);
        a.Label(ref wait);
        a.pause();
        a.cmp(__qword_ptr[Guest.Data], 1);
        a.jne(wait);
        g.Exit(0);
        a.Label(ref ap);                    // never runs (the filter moves the AP to apReal)
        a.mov(__qword_ptr[Guest.Data], 2);
        a.hlt();
        a.Label(ref apReal);
        a.mov(__qword_ptr[Guest.Data], 1);
        var park = a.CreateLabel();
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);
        g.Build();
        var seen = new List<(int, ulong)>();
        g.M.Attach(new HookAgent { OnStartRip = (v, rip) => { seen.Add((v.Index, rip)); return v.Index == 0 ? g.Addr(bspReal) : g.Addr(apReal); } });
        var decoded = new System.Collections.Concurrent.ConcurrentBag<ulong>();
        g.M.OnBlockDecoded((_, rip, pa) => { Assert.Equal(rip, pa); decoded.Add(rip); }); // identity-mapped code
        var r = g.Run();
        Assert.True(r.Exited && r.ExitStatus == 0, r.Message);
        Assert.Equal([(0, Guest.Code), (1, g.Addr(ap))], seen);
        Assert.Contains(g.Addr(bspReal), decoded);
        Assert.Contains(g.Addr(apReal), decoded);
        Assert.DoesNotContain(Guest.Code, decoded);
        Assert.DoesNotContain(g.Addr(ap), decoded);
    }
}
