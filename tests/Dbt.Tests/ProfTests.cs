using Harness.Smp.Control;
using Iced.Intel;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Tests;

/// <summary>
/// The prof client: its counts are exact where an exact reference exists (the native run's
/// instruction count, jumptable outcomes of a crafted program), its counter snippet keeps the flags
/// (and the planted snippet that does not is caught), and the guest kernel gives the native results
/// with prof attached.
/// </summary>
public class ProfTests(ITestOutputHelper output)
{
    private const ulong D = Support.Data;

    private static readonly Lazy<ProfSupport.ComputeRun> nativeCompute = new(() => ProfSupport.Compute(1, new Deterministic(100), null));
    private static readonly Lazy<KernelSupport.KernelRun> nativeKernel = new(() => ProfSupport.Boot(null, 2, new Deterministic(1000)).Run);

    /// <summary>
    /// compute.elf on one vCPU takes no interrupts and runs every instruction from the cache, so the
    /// guest instructions prof counts are exactly the instructions the native run executes.
    /// </summary>
    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void GuestInstructionsEqualTheNativeRunsInstructionsOnCompute(string config)
    {
        var native = nativeCompute.Value;
        var tx = ProfSupport.Compute(1, new Deterministic(100), ProfSupport.Options(config));
        Assert.True(tx.Result.Exited && tx.Result.ExitStatus == 0, $"{tx.Result.Reason}: {tx.Result.Message}");
        Assert.Equal(native.Console, tx.Console);
        var p = tx.Prof!.Value;
        output.WriteLine($"compute {config}: native {native.Result.TotalInstructions:N0} insns, translated with prof {tx.Result.TotalInstructions:N0}; {p}");
        Assert.Equal(native.Result.TotalInstructions, p.Instructions);
        Assert.Equal(p.IndirectBranches, p.Level1Hits + p.Level1Misses);
        if (config == "no-callret") Assert.True(p.IndirectBranches > 1000, "every ret is an indirect branch under no-callret");
    }

    /// <summary>
    /// cmp; jb; je: the segment after jb starts at je, so a counter sits between the cmp and the je
    /// that reads its flags. r8 counts the je taken, rbx the other outcomes.
    /// </summary>
    private static byte[] StraddleProgram(int iterations) => Support.Asm(a =>
    {
        var loop = a.CreateLabel(); var below = a.CreateLabel(); var equal = a.CreateLabel(); var next = a.CreateLabel();
        a.xor(ebx, ebx);
        a.xor(r8d, r8d);
        a.mov(ecx, iterations);
        a.Label(ref loop);
        a.mov(eax, ecx);
        a.and(eax, 3);
        a.cmp(eax, 1);
        a.jb(below);
        a.je(equal);
        a.add(rbx, 7);
        a.jmp(next);
        a.Label(ref below);
        a.add(rbx, 1);
        a.jmp(next);
        a.Label(ref equal);
        a.add(r8, 1);
        a.Label(ref next);
        a.dec(ecx);
        a.jnz(loop);
        a.mov(__qword_ptr[D], rbx);
        a.mov(__qword_ptr[D + 8], r8);
        Support.Exit(a);
    });

    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void SegmentsCountExactlyWhatRanAcrossTakenAndUntakenBranches(string config)
    {
        var code = StraddleProgram(1000);
        var native = ProfSupport.Snippet(code, null);
        var tx = ProfSupport.Snippet(code, ProfSupport.Options(config));
        Assert.True(native.Result.Exited && tx.Result.Exited, $"{tx.Result.Reason}: {tx.Result.Message}");
        Assert.Equal(250UL, BitConverter.ToUInt64(native.DataPage, 8));
        Assert.Equal(native.DataPage, tx.DataPage);
        Assert.Equal(native.Result.TotalInstructions, tx.Prof!.Value.Instructions);
    }

    [Fact]
    public void PlantedCounterThatClobbersTheFlagsIsCaught()
    {
        var code = StraddleProgram(1000);
        var native = ProfSupport.Snippet(code, null);
        var planted = ProfSupport.Snippet(code, ProfSupport.Options("default", plantedClobber: true));
        Assert.True(planted.Result.Exited, $"{planted.Result.Reason}: {planted.Result.Message}");
        ulong taken = BitConverter.ToUInt64(planted.DataPage, 8);
        output.WriteLine($"je taken: native 250, with the flag-clobbering counter {taken}");
        Assert.NotEqual(native.DataPage, planted.DataPage);
        Assert.Equal(0UL, taken); // the add of a positive count clears ZF: the je never sees the cmp
    }

    /// <summary>
    /// A syscall-style entry: swapgs, save RSP, load the kernel stack from the per-CPU area. syscall
    /// does not switch stacks, so until that load RSP is the caller's, here an unmapped address (the
    /// second round; the first, on a mapped stack, translates and chains everything). Natively
    /// nothing touches that stack; a counter snippet's pushfq at the entry would fault with no IDT
    /// to go to, so the segment's counter must wait for the load.
    /// </summary>
    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void SegmentStartingWithSwapgsCountsOnlyOnTheKernelStack(string config)
    {
        const ulong area = D + 0x100, unmapped = 0x0000_7000_0000_0000;
        var code = Support.Asm(a =>
        {
            var loop = a.CreateLabel(); var entry = a.CreateLabel();
            a.mov(ecx, 0xC000_0102);                  // KERNEL_GS_BASE: what swapgs brings in
            a.mov(rax, area);
            a.mov(rdx, rax);
            a.shr(rdx, 32);
            a.wrmsr();
            a.mov(rbp, rsp);
            a.mov(r12, D + 0x800);                    // round 1: a mapped stack
            a.mov(r13d, 2);
            a.Label(ref loop);
            a.mov(rsp, r12);
            a.jmp(entry);
            a.Label(ref entry);
            a.swapgs();
            a.mov(__qword_ptr.gs[16], rsp);
            a.mov(rsp, __qword_ptr.gs[8]);
            a.push(rax);
            a.pop(rax);
            a.mov(rsp, __qword_ptr.gs[16]);
            a.swapgs();
            a.mov(rsp, rbp);
            a.add(__qword_ptr[D], 1);
            a.mov(r12, unmapped);                     // round 2: the caller's stack is not mapped
            a.dec(r13d);
            a.jnz(loop);
            Support.Exit(a);
        });
        var data = new byte[0x200];
        BitConverter.TryWriteBytes(data.AsSpan(0x108), Support.StackTop - 0x2000); // the kernel stack top at gs:8
        var native = ProfSupport.Snippet(code, null, data: data);
        var tx = ProfSupport.Snippet(code, ProfSupport.Options(config), data: data);
        Assert.True(native.Result.Exited, $"native: {native.Result.Reason}: {native.Result.Message}");
        Assert.True(tx.Result.Exited, $"{tx.Result.Reason}: {tx.Result.Message}");
        Assert.Equal(2UL, BitConverter.ToUInt64(tx.DataPage, 0));
        Assert.Equal(native.Result.TotalInstructions, tx.Prof!.Value.Instructions);
    }

    /// <summary>
    /// Two indirect-jump targets 16 KiB apart share a level-1 entry. The first round misses twice
    /// (the dispatcher fills level 1 with the second target); from then on the second target hits
    /// level 1 and the first misses it and hits level 2.
    /// </summary>
    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void JumptableLevelsAreCountedExactly(string config)
    {
        const int n = 500;
        var main = new Assembler(64);
        var loop = main.CreateLabel(); var back1 = main.CreateLabel(); var back2 = main.CreateLabel();
        ulong t1 = Support.Code + 0x4000, t2 = Support.Code + 0x8000;
        main.mov(ecx, n);
        main.Label(ref loop);
        main.mov(rax, t1);
        main.jmp(rax);
        main.Label(ref back1);
        main.mov(rax, t2);
        main.jmp(rax);
        main.Label(ref back2);
        main.dec(ecx);
        main.jnz(loop);
        Support.Exit(main);
        var code = new byte[0x8000 + 16];
        var labels = Assemble(main, Support.Code, code, 0);
        Assemble(Jmp(labels.GetLabelRIP(back1)), t1, code, 0x4000);
        Assemble(Jmp(labels.GetLabelRIP(back2)), t2, code, 0x8000);
        Assert.Equal(Indirect.JumpTable.L1Index(t1), Indirect.JumpTable.L1Index(t2));

        var r = ProfSupport.Snippet(code, ProfSupport.Options(config));
        Assert.True(r.Result.Exited, $"{r.Result.Reason}: {r.Result.Message}");
        var p = r.Prof!.Value;
        output.WriteLine(p.ToString());
        Assert.Equal(2 * n, p.IndirectBranches);
        Assert.Equal(2, p.JumpTableMisses);
        Assert.Equal(n - 1, p.Level1Hits);
        Assert.Equal(n - 1, p.Level2Hits);
        Assert.Equal(n + 1, p.Level1Misses);
    }

    private static Assembler Jmp(ulong to)
    {
        var a = new Assembler(64);
        a.jmp(to);
        return a;
    }

    private static AssemblerResult Assemble(Assembler a, ulong at, byte[] into, int offset)
    {
        using var ms = new MemoryStream();
        var r = a.Assemble(new StreamCodeWriter(ms), at, BlockEncoderOptions.ReturnNewInstructionOffsets);
        ms.ToArray().CopyTo(into, offset);
        return r;
    }

    /// <summary>prof's dimension of the kernel matrix (KernelTests runs the same configurations without it).</summary>
    public static TheoryData<string, int, string> Matrix() => KernelTests.Matrix();

    [Theory]
    [MemberData(nameof(Matrix))]
    public void DefaultWorkloadsGiveNativeResultsWithProf(string config, int vcpus, string exec)
    {
        var reference = nativeKernel.Value;
        KernelTests.AssertAllPassed(reference, "native");
        var (run, prof) = ProfSupport.Boot(ProfSupport.Options(config), vcpus, Support.Control(exec));
        KernelTests.AssertAllPassed(run, $"{config}+prof {vcpus} vCPUs {exec}");
        Assert.Equal(reference.Results, run.Results);
        Assert.Equal(reference.WorkloadExits, run.WorkloadExits);
        Assert.True(run.NativeDecodes == 0, $"kernel code ran outside the code cache: {run.NativeDecodes} blocks, the first at 0x{run.FirstNativeRip:x}");
        var s = run.Dbt!.Stats;
        Assert.Null(s.Failure);
        var p = prof!.Value;
        output.WriteLine($"{config}+prof {vcpus} {exec}: {p}; machine {run.Result.TotalInstructions:N0} insns");
        // Every lookup ends at level 1 or goes on to level 2, which hits or enters the dispatcher once.
        Assert.Equal(p.IndirectBranches, p.Level1Hits + p.Level1Misses);
        Assert.InRange(p.Level2Hits, 0, p.Level1Misses);
        Assert.Equal(s.DispatcherEntries, p.DispatcherEntries);
        // The kernel's instructions are a part of what the machine executed (user code, DBT code and prof's own are the rest).
        Assert.InRange(p.Instructions, run.Result.TotalInstructions / 10, run.Result.TotalInstructions - 1);
        if (config == "no-callret") Assert.True(p.IndirectBranches > 10 * 2000, "every kernel ret is an indirect branch under no-callret");
    }

    [Fact]
    public void PlantedCounterThatClobbersTheFlagsBreaksTheKernel()
    {
        var (run, _) = ProfSupport.Boot(ProfSupport.Options("default", plantedClobber: true), 1, new Deterministic(1000),
            "run=selftest,null_syscall", maxInstructions: 100_000_000);
        output.WriteLine($"{run.Result.Reason} {run.Result.ExitStatus}: {run.Result.Message}\n{run.Console}");
        Assert.False(run.Result.Exited && run.Result.ExitStatus == 0 && !run.Console.Contains("panic"),
            "the kernel ran correctly with a counter snippet that clobbers the flags");
    }
}
