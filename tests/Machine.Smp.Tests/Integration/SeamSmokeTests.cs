using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>
/// Proves the controlled-execution seam is real: two vCPUs doing non-atomic read-modify-write on a
/// shared counter lose updates when the deterministic control interleaves them finely, and never
/// with a lock prefix.
/// </summary>
public class SeamSmokeTests
{
    const ulong Counter = 0x200000, Done0 = 0x200040, Done1 = 0x200080, ApStack = 0x300000;
    const int Iterations = 1000;

    static byte[] Guest(bool locked) => Guest(Iterations, locked
        ? a => a.@lock.add(__qword_ptr[rbx], 1)
        : a => { a.mov(rax, __qword_ptr[rbx]); a.add(rax, 1); a.mov(__qword_ptr[rbx], rax); });

    /// <summary>
    /// BSP starts AP 1; both run `increment` (rbx = counter address; rax, rdx, rsi and rdi free)
    /// `iterations` times; the BSP waits for both and exits with the counter.
    /// </summary>
    internal static byte[] Guest(int iterations, Action<Assembler> increment) => Support.Asm(a =>
    {
        var ap = a.CreateLabel("ap");
        var worker = a.CreateLabel("worker");
        var wait = a.CreateLabel("wait");
        var loop = a.CreateLabel("loop");
        var park = a.CreateLabel("park");
        // BSP: fill AP 1's mailbox (boot info in rdi; ap[1] at +64+24) and send it a Start-Up IPI.
        a.lea(rax, __[ap]);
        a.mov(__qword_ptr[rdi + 64 + 24], rax);
        a.mov(rax, ApStack);
        a.mov(__qword_ptr[rdi + 64 + 32], rax);
        a.mov(__qword_ptr[rdi + 64 + 40], 0);
        a.mov(ecx, 0x830);
        a.mov(eax, 0x600);
        a.mov(edx, 1);
        a.wrmsr();
        a.call(worker);
        a.mov(rbx, Done0);
        a.mov(__qword_ptr[rbx], 1);
        a.mov(rbx, Done1);
        a.Label(ref wait);
        a.pause();
        a.mov(rax, __qword_ptr[rbx]);
        a.test(rax, rax);
        a.jz(wait);
        a.mov(rbx, Counter);
        a.mov(rax, __qword_ptr[rbx]);
        a.@out(0xF4, eax);
        a.hlt();
        // AP 1
        a.Label(ref ap);
        a.call(worker);
        a.mov(rbx, Done1);
        a.mov(__qword_ptr[rbx], 1);
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);
        // worker: Iterations increments of the shared counter
        a.Label(ref worker);
        a.mov(rbx, Counter);
        a.mov(ecx, iterations);
        a.Label(ref loop);
        increment(a);
        a.dec(ecx);
        a.jnz(loop);
        a.ret();
    });

    // Free-running, the BSP's wait loop spins for as long as the host takes to start and run the AP
    // thread: at compiled-code speed a busy host can let it retire millions of instructions meanwhile.
    static RunResult Run(bool locked, ExecutionControl control, long maxInstructions = 1_000_000)
    {
        var r = Support.RunCode(Guest(locked), vcpus: 2, control: control, maxInstructions: maxInstructions);
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.True(r.Vcpus[1].Started && r.Vcpus[1].Instructions > Iterations, "AP 1 did not run");
        return r;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void NonAtomicIncrementsLoseUpdatesUnderFineInterleaving(long quantum)
    {
        var r = Run(locked: false, new Deterministic(quantum));
        Assert.InRange(r.ExitStatus, Iterations, 2 * Iterations - 1);
        // Reproducible: the same interleaving, the same lost updates, the same instruction counts.
        var again = Run(locked: false, new Deterministic(quantum));
        Assert.Equal(r.ExitStatus, again.ExitStatus);
        Assert.Equal(r.Vcpus.Select(v => v.Instructions), again.Vcpus.Select(v => v.Instructions));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void LockedIncrementsNeverLoseUpdates(long quantum)
    {
        var r = Run(locked: true, new Deterministic(quantum));
        Assert.Equal(2 * Iterations, r.ExitStatus);
        var again = Run(locked: true, new Deterministic(quantum));
        Assert.Equal(r.Vcpus.Select(v => v.Instructions), again.Vcpus.Select(v => v.Instructions));
    }

    [Fact]
    public void CoarseQuantumRunsEachWorkerToCompletion()
    {
        // A quantum longer than the whole worker never splits a read-modify-write: nothing is lost.
        var r = Run(locked: false, new Deterministic(10_000));
        Assert.Equal(2 * Iterations, r.ExitStatus);
    }

    [Fact]
    public void LockedIncrementsAreAtomicFreeRunning()
    {
        var r = Run(locked: true, new FreeRunning(), maxInstructions: 2_000_000_000);
        Assert.Equal(2 * Iterations, r.ExitStatus);
    }
}
