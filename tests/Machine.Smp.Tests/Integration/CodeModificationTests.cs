using Harness.Tests.Shared;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>
/// Written code is never executed stale: by the writing vCPU (even inside the block it is
/// executing), by another vCPU (cross-modifying code, as a translator's chaining patch is), or
/// after a host-side write (the DBT's call-outs write code through the host).
/// </summary>
public class CodeModificationTests
{
    [Fact]
    public void StoreIntoTheNextInstructionOfTheSameBlockTakesEffect()
    {
        var code = Support.Asm(a =>
        {
            var patch = a.CreateLabel();
            a.lea(rbx, __[patch]);
            a.mov(__dword_ptr[rbx + 1], 42);   // the imm32 of `mov eax, 7` below
            a.Label(ref patch);
            a.mov(eax, 7);
            a.@out(0xF4, eax);
        });
        var r = Support.RunCode(code);
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(42, r.ExitStatus);
    }

    [Fact]
    public void PatchingAFunctionAlreadyDecodedTakesEffectOnTheNextCall()
    {
        var code = Support.Asm(a =>
        {
            var f = a.CreateLabel();
            a.call(f);                          // decodes and runs f: 7
            a.mov(r12, rax);
            a.lea(rbx, __[f]);
            a.mov(__dword_ptr[rbx + 1], 35);
            a.call(f);                          // must run the patched f: 35
            a.add(rax, r12);
            a.@out(0xF4, eax);
            a.Label(ref f);
            a.mov(eax, 7);
            a.ret();
        });
        var r = Support.RunCode(code);
        Assert.Equal(42, r.ExitStatus);
    }

    /// <summary>The BSP polls f() until it returns non-zero; AP 1 patches f's immediate. A stale decode would spin until the limit.</summary>
    static byte[] CrossModifyingGuest() => Support.Asm(a =>
    {
        var ap = a.CreateLabel("ap");
        var f = a.CreateLabel("f");
        var poll = a.CreateLabel("poll");
        var park = a.CreateLabel("park");
        a.lea(rax, __[ap]);
        a.mov(__qword_ptr[rdi + 64 + 24], rax);
        a.mov(rax, 0x300000UL);
        a.mov(__qword_ptr[rdi + 64 + 32], rax);
        a.mov(ecx, 0x830);
        a.mov(eax, 0x600);
        a.mov(edx, 1);
        a.wrmsr();
        a.Label(ref poll);
        a.call(f);
        a.test(eax, eax);
        a.jz(poll);
        a.@out(0xF4, eax);
        a.Label(ref f);
        a.mov(eax, 0);
        a.ret();
        a.Label(ref ap);
        a.mov(ecx, 5000);                        // let the BSP decode and run f many times first
        var delay = a.CreateLabel();
        a.Label(ref delay);
        a.dec(ecx);
        a.jnz(delay);
        a.lea(rbx, __[f]);
        a.mov(__dword_ptr[rbx + 1], 42);
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);
    });

    public static TheoryData<string> Controls => new() { "free", "det1", "det7", "det1000" };

    static ExecutionControl Control(string name) => name switch
    {
        "free" => new FreeRunning(),
        "det1" => new Deterministic(1),
        "det7" => new Deterministic(7),
        _ => new Deterministic(1000),
    };

    [Theory]
    [MemberData(nameof(Controls))]
    public void AnotherVcpusPatchIsSeen(string control)
    {
        var r = Support.RunCode(CrossModifyingGuest(), vcpus: 2, control: Control(control), maxInstructions: 5_000_000);
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(42, r.ExitStatus);
    }

    /// <summary>Calls f (at fAddr, initially f0), lets the host rewrite code in a vmcall, calls f again; exits with the sum.</summary>
    static RunResult CallRewriteCall(ulong fAddr, byte[] f0, Action<Harness.Smp.Machine> rewrite)
    {
        var code = Support.Asm(a =>
        {
            a.mov(r13, fAddr);
            a.call(r13);
            a.mov(r12, rax);
            a.vmcall();                          // the host rewrites code
            a.call(r13);
            a.add(rax, r12);
            a.@out(0xF4, eax);
        });
        using var m = new Harness.Smp.Machine(new MachineOptions { MemoryBytes = 32UL << 20, ReservedBytes = 1UL << 20, Control = new Deterministic(1000), MaxInstructions = 100_000 });
        m.Memory.Write(0x100000, code);
        m.Memory.Write(fAddr, f0);
        m.OnVmcall(_ => rewrite(m));
        return m.Run(entry: 0x100000);
    }

    [Fact]
    public void HostWriteThroughPhysicalMemoryInvalidatesDecodedCode()
    {
        const ulong fAddr = 0x100800;
        var f0 = Support.Asm(a => { a.mov(eax, 7); a.ret(); }, fAddr);
        var f1 = Support.Asm(a => { a.mov(eax, 35); a.ret(); }, fAddr);
        var r = CallRewriteCall(fAddr, f0, m => m.Memory.Write(fAddr, f1));
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(42, r.ExitStatus);
    }

    [Fact]
    public void AHostWriteBesideDecodedCodeKeepsItDecodedAndAWriteIntoItRetiresIt()
    {
        // A DBT appends blocks to a page whose earlier blocks run: only blocks the write overlaps are
        // retired (PhysicalMemory.RetireOverlapping), so the rest are not decoded again.
        const ulong fAddr = 0x100800, spare = 0x100c00;
        var f0 = Support.Asm(a => { a.mov(eax, 7); a.ret(); }, fAddr);
        var f1 = Support.Asm(a => { a.mov(eax, 35); a.ret(); }, fAddr);
        var code = Support.Asm(a =>
        {
            a.mov(r13, fAddr);
            a.call(r13);
            a.mov(r12, rax);
            a.vmcall();                          // 1: the host writes beside f (same page)
            a.call(r13);
            a.add(r12, rax);
            a.vmcall();                          // 2: the host rewrites f
            a.call(r13);
            a.add(rax, r12);
            a.@out(0xF4, eax);
        });
        using var m = new Harness.Smp.Machine(new MachineOptions { MemoryBytes = 32UL << 20, ReservedBytes = 1UL << 20, Control = new Deterministic(1000), MaxInstructions = 100_000 });
        m.Memory.Write(0x100000, code);
        m.Memory.Write(fAddr, f0);
        int calls = 0;
        var decodedF = new List<int>();
        m.OnBlockDecoded((_, _, pa) => { if (pa == fAddr) decodedF.Add(calls); });
        m.OnVmcall(_ =>
        {
            calls++;
            if (calls == 1) m.Memory.Write(spare, new byte[] { 0xC3, 0xC3, 0xC3, 0xC3 });
            else m.Memory.Write(fAddr, f1);
        });
        var r = m.Run(entry: 0x100000);
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(7 + 7 + 35, r.ExitStatus);
        // f decoded before the first call-out, not again after the write beside it, again after the write into it.
        Assert.Equal(new[] { 0, 2 }, decodedF);
    }

    [Fact]
    public void AHostWriteToTheTailOfALongDecodedBlockRetiresIt()
    {
        // The overlap scan starts the page's longest block before the write (CodePage.MaxBlockBytes):
        // a write to the immediate at the end of a 200-byte block must still find the block's start.
        const ulong fAddr = 0x100400;
        byte[] F(int value) => Support.Asm(a => { for (int i = 0; i < 40; i++) a.nop(); a.mov(eax, value); a.ret(); }, fAddr);
        var f0 = F(7);
        var f1 = F(35);
        int tail = f0.Length - 5; // the mov's imm32 (then ret)
        Assert.Equal(0x100400 + 40 + 1, (int)fAddr + tail);
        var r = CallRewriteCall(fAddr, f0, m => m.Memory.Write(fAddr + (ulong)tail, f1.AsSpan(tail, 4))); // the imm32 only
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(7 + 35, r.ExitStatus);
    }

    [Fact]
    public void UnknownPortsReadAllOnesAndIgnoreWrites()
    {
        var code = Support.Asm(a =>
        {
            a.xor(eax, eax);
            a.@out(0x80, al);                    // ignored
            a.@in(al, 0x80);                     // 0xff
            a.movzx(ebx, al);
            a.mov(dx, 0x1234);
            a.@in(eax, dx);                      // 0xffffffff
            a.add(eax, ebx);                     // 0xffffffff + 0xff = 0xfe (mod 2^32)
            a.@out(0xF4, eax);
        });
        var r = Support.RunCode(code);
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(0xFE, r.ExitStatus);
    }
}
