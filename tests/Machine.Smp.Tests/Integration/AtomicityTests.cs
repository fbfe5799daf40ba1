using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>
/// Every atomic idiom a kernel builds locks and counters from, run by two vCPUs on one shared
/// counter: under real threads (free-running, enough iterations that the threads overlap for
/// millions of instructions) and under the finest deterministic interleavings. Each must count
/// exactly. The non-atomic idiom that loses updates under the same interleavings is the seam
/// smoke test's planted bug (SeamSmokeTests).
/// </summary>
public class AtomicityTests
{
    const ulong Lock = 0x200100; // a second word on the counter's page, for the lock-based idioms

    public static TheoryData<string> Idioms => new(Increments.Keys);

    static readonly Dictionary<string, Action<Assembler>> Increments = new()
    {
        ["lock add"] = a => a.@lock.add(__qword_ptr[rbx], 1),
        ["lock inc dword"] = a => a.@lock.inc(__dword_ptr[rbx]),
        ["lock xadd"] = a => { a.mov(eax, 1); a.@lock.xadd(__qword_ptr[rbx], rax); },
        ["lock cmpxchg loop"] = a =>
        {
            var retry = a.CreateLabel();
            a.mov(rax, __qword_ptr[rbx]);
            a.Label(ref retry);
            a.lea(rdx, __[rax + 1]);
            a.@lock.cmpxchg(__qword_ptr[rbx], rdx);
            a.jne(retry);
        },
        ["xchg spinlock"] = a =>
        {
            var spin = a.CreateLabel();
            a.mov(rsi, Lock);
            a.Label(ref spin);
            a.mov(eax, 1);
            a.xchg(__dword_ptr[rsi], eax);
            a.test(eax, eax);
            a.jnz(spin);
            a.mov(rax, __qword_ptr[rbx]);   // critical section: a plain read-modify-write
            a.add(rax, 1);
            a.mov(__qword_ptr[rbx], rax);
            a.mov(__dword_ptr[rsi], 0);     // release: a plain store (x86 TSO)
        },
        ["lock bts spinlock"] = a =>
        {
            var spin = a.CreateLabel();
            a.mov(rsi, Lock);
            a.Label(ref spin);
            a.pause();
            a.@lock.bts(__dword_ptr[rsi], 0);
            a.jb(spin);
            a.inc(__qword_ptr[rbx]);
            a.@lock.btr(__dword_ptr[rsi], 0);
        },
        ["cmpxchg16b pair"] = a =>
        {
            // 128-bit counter pair at the counter's address (16-aligned): low word counts.
            var retry = a.CreateLabel();
            a.push(rbx);
            a.mov(rdi, rbx);
            a.mov(rax, __qword_ptr[rdi]);
            a.mov(rdx, __qword_ptr[rdi + 8]);
            a.Label(ref retry);
            a.lea(rbx, __[rax + 1]);
            a.mov(rsi, rdx);
            a.xchg(rcx, rsi);               // rcx is the loop counter: keep it in rsi meanwhile
            a.@lock.cmpxchg16b(__xmmword_ptr[rdi]);
            a.xchg(rcx, rsi);
            a.jne(retry);
            a.pop(rbx);
        },
    };

    static RunResult Run(string idiom, int iterations, ExecutionControl control)
    {
        var r = Support.RunCode(SeamSmokeTests.Guest(iterations, Increments[idiom]), vcpus: 2, control: control, maxInstructions: 200_000_000);
        Assert.True(r.Reason == StopReason.Exited, $"{idiom}: {r.Reason}: {r.Message}");
        return r;
    }

    [Theory]
    [MemberData(nameof(Idioms))]
    public void CountsExactlyOnRealThreads(string idiom)
    {
        const int n = 100_000;
        var r = Run(idiom, n, new FreeRunning());
        Assert.Equal(2 * n, r.ExitStatus);
    }

    /// <summary>
    /// The planted bug for the real-thread check: a plain read-modify-write loses updates when two
    /// host threads really race. A few attempts make a run where the threads never overlapped
    /// (one descheduled throughout) vanishingly unlikely.
    /// </summary>
    [Fact]
    public void PlainIncrementLosesUpdatesOnRealThreads()
    {
        const int n = 1_000_000;
        var counts = new List<long>();
        for (int attempt = 0; attempt < 5; attempt++)
        {
            var r = Support.RunCode(SeamSmokeTests.Guest(n, a => { a.mov(rax, __qword_ptr[rbx]); a.add(rax, 1); a.mov(__qword_ptr[rbx], rax); }),
                vcpus: 2, control: new FreeRunning(), maxInstructions: 200_000_000);
            Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
            counts.Add(r.ExitStatus);
            if (r.ExitStatus < 2 * n) return;
        }
        Assert.Fail($"no update was lost in {counts.Count} racing runs (counts {string.Join(", ", counts)}): the vCPU threads never overlapped");
    }

    [Theory]
    [MemberData(nameof(Idioms))]
    public void CountsExactlyUnderEveryFineInterleaving(string idiom)
    {
        const int n = 300;
        foreach (long quantum in new long[] { 1, 2, 3, 5 })
        {
            var r = Run(idiom, n, new Deterministic(quantum));
            Assert.True(2 * n == r.ExitStatus, $"{idiom}, quantum {quantum}: counted {r.ExitStatus}, expected {2 * n}");
        }
    }
}
