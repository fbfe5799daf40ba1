using Harness.Smp;
using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Tests;

/// <summary>
/// The machine's x86-TSO mode, instruction by instruction: what a store leaves in the buffer, what
/// the owner's loads read (store forwarding over mixed sizes and partial overlaps), which
/// instructions drain, and the deterministic control's fixed drain rule. A host-stepped machine
/// (<see cref="HostStepped"/>) drains nothing on its own, so each step is observable.
/// </summary>
public class TsoTests
{
    private const ulong X = RingZeroGuest.Data + 0x100, Page = RingZeroGuest.Data + 0x1000;

    /// <summary>A machine with the guest loaded and the BSP booted at its code, not yet run.</summary>
    private static (Machine M, Vcpu V) Boot(RingZeroGuest g, int vcpus = 1, MemoryModel model = MemoryModel.Tso, ExecutionControl? control = null)
    {
        var m = new Machine(new MachineOptions { Vcpus = vcpus, MemoryBytes = 16UL << 20, ReservedBytes = 2UL << 20, Control = control ?? new HostStepped(), MemoryModel = model });
        g.Load(m);
        return (m, m.Boot(entry: RingZeroGuest.Code));
    }

    private static void Step(Machine m, Vcpu v, int n)
    {
        v.RunFor(n);
        Assert.False(m.Stopping, m.StopState.Message);
    }

    [Fact]
    public void LoadsReadTheirOwnBufferedBytesOverMemoryAcrossSizesAndPartialOverlaps()
    {
        var g = new RingZeroGuest();
        var a = g.A;
        a.mov(rax, 0x1122_3344_5566_7788);
        a.mov(__qword_ptr[X], rax);              // 8 bytes buffered
        a.mov(__byte_ptr[X + 1], 0xAA);          // one byte over them, buffered after
        a.mov(rbx, __qword_ptr[X]);              // both merged, newest last
        a.mov(cx, __word_ptr[X + 7]);            // the last buffered byte and one from memory
        a.mov(edx, __dword_ptr[X + 1]);          // inside the first entry, under the second
        a.hlt();
        var (m, v) = Boot(g);
        using (m)
        {
            m.Memory.Span(X, 16).Fill(0xEE);
            Step(m, v, 6);
            Assert.Equal(2, v.Tso!.Count);
            Assert.Equal(0xEEEE_EEEE_EEEE_EEEEUL, m.Memory.ReadU64(X)); // nothing reached memory yet
            Assert.Equal(0x1122_3344_5566_AA88UL, v.Gpr(Reg.Rbx));
            Assert.Equal(0xEE11UL, v.Gpr(Reg.Rcx) & 0xFFFF);
            Assert.Equal(0x4455_66AAUL, v.Gpr(Reg.Rdx));
            v.Tso.DrainAll();
            Assert.Equal(0x1122_3344_5566_AA88UL, m.Memory.ReadU64(X));
        }
    }

    [Fact]
    public void AStoreAcrossAPageIsBufferedByteByByteAndDrainsInOrder()
    {
        var g = new RingZeroGuest();
        g.A.mov(rax, 0x0102_0304_0506_0708);
        g.A.mov(__qword_ptr[Page - 3], rax);
        g.A.mov(rbx, __qword_ptr[Page - 3]);
        g.A.hlt();
        var (m, v) = Boot(g);
        using (m)
        {
            Step(m, v, 3);
            Assert.Equal(8, v.Tso!.Count);
            Assert.Equal(0x0102_0304_0506_0708UL, v.Gpr(Reg.Rbx));
            Assert.Equal(0UL, m.Memory.ReadU64(Page - 3));
            Assert.True(v.Tso.DrainOne());
            Assert.Equal(0x08UL, m.Memory.ReadU64(Page - 3)); // oldest first: the lowest byte
            v.Tso.DrainAll();
            Assert.Equal(0x0102_0304_0506_0708UL, m.Memory.ReadU64(Page - 3));
        }
    }

    /// <summary>Each row: an instruction after one buffered store, and whether it drains the buffer.</summary>
    public static TheoryData<string, bool> Drainers => new()
    {
        { "mfence", true },
        { "lock add", true },
        { "xchg", true },
        { "cpuid", true },
        { "wrmsr KERNEL_GS_BASE", true },
        { "out", true },
        { "lfence", false },
        { "sfence", false },
        { "wrmsr x2APIC ICR", false },
        { "plain store", false },
    };

    [Theory]
    [MemberData(nameof(Drainers))]
    public void FencesLockedAndSerializingInstructionsDrainTheBufferOthersDoNot(string instruction, bool drains)
    {
        var g = new RingZeroGuest();
        var a = g.A;
        a.mov(__qword_ptr[X], 1);
        switch (instruction)
        {
            case "mfence": a.mfence(); break;
            case "lock add": a.@lock.add(__qword_ptr[X + 64], 1); break;
            case "xchg": a.xchg(__qword_ptr[X + 64], rbx); break;
            case "cpuid": a.cpuid(); break;
            case "wrmsr KERNEL_GS_BASE": g.Wrmsr(0xC000_0102, 0x1234); break;
            case "out": a.@out(0xE9, al); break;
            case "lfence": a.lfence(); break;
            case "sfence": a.sfence(); break;
            case "wrmsr x2APIC ICR": g.Wrmsr(RingZeroGuest.MsrIcr, 0x40 | (1UL << 32)); break; // a fixed IPI to vCPU 1
            case "plain store": a.mov(__qword_ptr[X + 64], 2); break;
        }
        a.hlt();
        var (m, v) = Boot(g, vcpus: 2);
        using (m)
        {
            // The store, then the instruction (wrmsr comes with three movs before it).
            Step(m, v, instruction.StartsWith("wrmsr") ? 5 : 2);
            Assert.Equal(drains ? 1UL : 0UL, m.Memory.ReadU64(X));
            Assert.Equal(drains, v.Tso!.Count == 0);
        }
    }

    [Fact]
    public void AStoreToAPageWithDecodedCodeGoesToMemoryAtOnce()
    {
        var g = new RingZeroGuest();
        var a = g.A;
        var patch = a.CreateLabel();
        a.mov(__qword_ptr[X], 7);                 // buffered
        a.lea(rax, __[patch]);
        a.mov(__byte_ptr[rax], 0x90);             // the code page: drains the buffer, then writes through
        a.Label(ref patch);
        a.int3();
        a.hlt();
        var (m, v) = Boot(g);
        using (m)
        {
            Step(m, v, 3);
            Assert.Equal(0, v.Tso!.Count);
            Assert.Equal(7UL, m.Memory.ReadU64(X));
            Assert.Equal(0x90, m.Memory.Span(g.Address(patch), 1)[0]);
        }
    }

    [Fact]
    public void TsoIsRefusedUnderFreeRunningControl()
    {
        var e = Assert.Throws<ArgumentException>(() => new Machine(new MachineOptions { Control = new FreeRunning(), MemoryModel = MemoryModel.Tso }));
        Assert.Contains("free-running", e.Message);
    }

    /// <summary>
    /// Store buffering on two vCPUs of a ring-0 guest under the deterministic control (quantum 1):
    /// each stores its flag and loads the other's. Under TSO both loads read 0 (the stores are
    /// still buffered), the same on every run; under SC never. With mfence between, never.
    /// </summary>
    [Theory]
    [InlineData(MemoryModel.Tso, false, true)]
    [InlineData(MemoryModel.Sc, false, false)]
    [InlineData(MemoryModel.Tso, true, false)]
    public void TheDeterministicControlShowsStoreBufferingReproduciblyAndOnlyUnderTso(MemoryModel model, bool mfence, bool expectBothZero)
    {
        const ulong Flags = RingZeroGuest.Data + 0x2000, Results = Flags + 0x100;
        var g = new RingZeroGuest();
        var a = g.A;
        var worker = a.CreateLabel("worker");
        var skip = a.CreateLabel();
        a.jmp(skip);
        // r15 = this vCPU's index: flag[i] = 1; result[i] = flag[1 - i]
        a.Label(ref worker);
        a.mov(rbx, r15);
        a.xor(rbx, 1);
        a.mov(__qword_ptr[r15 * 8 + (long)Flags], 1);
        if (mfence) a.mfence();
        a.mov(rax, __qword_ptr[rbx * 8 + (long)Flags]);
        a.mov(__qword_ptr[r15 * 8 + (long)Results], rax);
        a.ret();
        a.Label(ref skip);
        g.EveryVcpuCalls(worker, 2, n => (ulong)n, fence: true);

        (ulong, ulong) RunOnce()
        {
            using var m = new Machine(new MachineOptions
            {
                Vcpus = 2, MemoryBytes = 16UL << 20, ReservedBytes = 2UL << 20, MaxInstructions = 1_000_000,
                Control = new Deterministic(quantum: 1), MemoryModel = model,
            });
            g.Load(m);
            var r = m.Run(entry: RingZeroGuest.Code);
            Assert.True(r.Exited, r.Message);
            return (m.Memory.ReadU64(Results), m.Memory.ReadU64(Results + 8));
        }

        var first = RunOnce();
        Assert.Equal(first, RunOnce());
        Assert.Equal(expectBothZero, first == (0, 0));
    }
}
