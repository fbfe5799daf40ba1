using Harness.Smp.Cpu;
using Iced.Intel;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Tests;

/// <summary>Iced-assembled ring-0 snippets, natively and translated: each rule and mechanism on its own.</summary>
public class SnippetTests(ITestOutputHelper output)
{
    private const ulong D = Support.Data;

    private static void AssertExited(Support.SnippetRun r) =>
        Assert.True(r.Result.Exited && r.Result.ExitStatus == 0, $"{r.Result.Reason}: {r.Result.Message}");

    /// <summary>Runs natively and translated; both exit 0 and leave the same data page; returns the translated run.</summary>
    private static Support.SnippetRun SameAsNative(byte[] code, byte[]? data = null, DbtOptions? options = null)
    {
        var native = Support.Run(code, translate: false, data: data);
        var tx = Support.Run(code, translate: true, options, data);
        AssertExited(native);
        AssertExited(tx);
        Assert.Equal(native.DataPage, tx.DataPage);
        Assert.Equal(0, tx.NativeDecodes);
        return tx;
    }

    private static ulong Q(byte[] page, int slot) => BitConverter.ToUInt64(page, slot * 8);

    /// <summary>A 10000-iteration loop (jcc back edge, a call inside, a jmp) plus a final store.</summary>
    internal static byte[] LoopProgram(int iterations) => Support.Asm(a =>
    {
        var loop = a.CreateLabel(); var f = a.CreateLabel(); var skip = a.CreateLabel(); var done = a.CreateLabel();
        a.xor(ebx, ebx);
        a.mov(ecx, iterations);
        a.Label(ref loop);
        a.call(f);
        a.test(ecx, 1);
        a.jz(skip);
        a.add(rbx, 3);
        a.Label(ref skip);
        a.dec(ecx);
        a.jnz(loop);
        a.mov(__qword_ptr[D], rbx);
        a.jmp(done);
        a.Label(ref f);
        a.add(rbx, 1);
        a.ret();
        a.Label(ref done);
        Support.Exit(a);
    });

    internal static long LoopEntries(DbtOptions? options, int iterations)
    {
        var r = SameAsNative(LoopProgram(iterations), options: options);
        return r.Dbt!.Stats.DispatcherEntries;
    }

    [Fact]
    public void DirectBranchesAreChainedSoDispatcherEntriesStopGrowing()
    {
        long small = LoopEntries(null, 100), large = LoopEntries(null, 10_000);
        output.WriteLine($"dispatcher entries: 100 iterations {small}, 10000 iterations {large}");
        Assert.Equal(small, large);
        Assert.True(large < 20, $"{large} dispatcher entries");
    }

    [Fact]
    public void PlantedBugDroppingTheChainingPatchIsCaught()
    {
        // The same check as above, with the planted bug: the entries grow with the iteration count.
        long small = LoopEntries(new DbtOptions { DropChainingPatch = true }, 100);
        long large = LoopEntries(new DbtOptions { DropChainingPatch = true }, 10_000);
        output.WriteLine($"planted bug: 100 iterations {small}, 10000 iterations {large}");
        Assert.NotEqual(small, large);
        Assert.True(large >= 10_000);
    }

    /// <summary>Two nested calls that store their return addresses (read as data) and return 42 in RAX.</summary>
    internal static byte[] CallsProgram() => Support.Asm(a =>
        {
            var f = a.CreateLabel(); var g = a.CreateLabel(); var after = a.CreateLabel();
            a.call(f);
            a.Label(ref after);
            a.mov(__qword_ptr[D + 16], rax);
            Support.Exit(a);
            a.Label(ref f);
            a.mov(rax, __qword_ptr[rsp]);        // f's return address, as data
            a.mov(__qword_ptr[D], rax);
            a.call(g);
            a.mov(eax, 42);
            a.ret();
            a.Label(ref g);
            a.mov(rcx, __qword_ptr[rsp]);
            a.mov(__qword_ptr[D + 8], rcx);
            a.ret();
        });

    [Fact]
    public void CallsPushCodeCacheReturnAddressesAndRetStaysRet()
    {
        var code = CallsProgram();
        var native = Support.Run(code, translate: false);
        var tx = Support.Run(code, translate: true);
        AssertExited(native);
        AssertExited(tx);
        var cache = tx.Dbt!.Cache;
        Assert.False(cache.Contains(Q(native.DataPage, 0)));
        Assert.True(cache.Contains(Q(tx.DataPage, 0)), $"return address 0x{Q(tx.DataPage, 0):x} is not in the code cache");
        Assert.True(cache.Contains(Q(tx.DataPage, 1)));
        Assert.Equal(42UL, Q(tx.DataPage, 2));
        Assert.Equal(0, tx.Dbt.Stats.IndirectDispatches);
    }

    [Fact]
    public void IndirectJumpsAndCallsThroughRegistersAndMemory()
    {
        ulong t2 = 0, f = 0;
        BuildIndirect(ref t2, ref f, final: false);
        var code = BuildIndirect(ref t2, ref f, final: true);
        var r = SameAsNative(code);
        Assert.Equal(5UL + 10, Q(r.DataPage, 0));
        Assert.Equal(5UL + 10 + 100, Q(r.DataPage, 1));
        Assert.Equal(1115UL, Q(r.DataPage, 2));
        Assert.Equal(2115UL, Q(r.DataPage, 3));
        Assert.Equal(3115UL, Q(r.DataPage, 4));
        Assert.Equal(Support.StackTop, Q(r.DataPage, 5));
        // Five indirect branches to three distinct targets: one jumptable miss per target, then hits.
        Assert.Equal(3, r.Dbt!.Stats.IndirectDispatches);
    }

    /// <summary>jmp reg, jmp [rip+table], call reg, call [rsp+8], call [rip+table2]; table holds t2, table2 holds f.</summary>
    internal static byte[] BuildIndirect(ref ulong t2Addr, ref ulong fAddr, bool final)
    {
        var a = new Assembler(64);
        var t1 = a.CreateLabel(); var t2 = a.CreateLabel(); var f = a.CreateLabel(); var back1 = a.CreateLabel(); var back2 = a.CreateLabel();
        var table = a.CreateLabel(); var table2 = a.CreateLabel(); var fin = a.CreateLabel();
        a.mov(r12, 5);
        a.lea(rax, __[t1]);
        a.jmp(rax);
        a.Label(ref back1);
        a.jmp(__qword_ptr[table]);
        a.Label(ref back2);
        a.lea(rdx, __[f]);
        a.call(rdx);
        a.mov(__qword_ptr[D + 16], rax);
        a.push(rdx);
        a.push(0);
        a.call(__qword_ptr[rsp + 8]);
        a.add(rsp, 16);
        a.mov(__qword_ptr[D + 24], rax);
        a.call(__qword_ptr[table2]);
        a.mov(__qword_ptr[D + 32], rax);
        a.mov(__qword_ptr[D + 40], rsp);
        a.jmp(fin);
        a.Label(ref t1);
        a.add(r12, 10);
        a.mov(__qword_ptr[D], r12);
        a.jmp(back1);
        a.Label(ref t2);
        a.add(r12, 100);
        a.mov(__qword_ptr[D + 8], r12);
        a.jmp(back2);
        a.Label(ref f);
        a.add(r12, 1000);
        a.mov(rax, r12);
        a.ret();
        a.Label(ref table);
        a.dq(final ? t2Addr : 0);
        a.Label(ref table2);
        a.dq(final ? fAddr : 0);
        a.Label(ref fin);
        Support.Exit(a);
        using var ms = new MemoryStream();
        var res = a.Assemble(new StreamCodeWriter(ms), Support.Code, BlockEncoderOptions.ReturnNewInstructionOffsets);
        t2Addr = res.GetLabelRIP(t2);
        fAddr = res.GetLabelRIP(f);
        return ms.ToArray();
    }

    /// <summary>RIP-relative and absolute loads and stores; with its data page.</summary>
    internal static (byte[] Code, byte[] Data) RipRelativeDataProgram()
    {
        var code = Support.Asm(a =>
        {
            var cell = a.CreateLabel(); var over = a.CreateLabel();
            a.jmp(over);
            a.Label(ref cell);
            a.dq(0x1122334455667788UL);
            a.Label(ref over);
            a.mov(rax, __qword_ptr[cell]);                 // RIP-relative load from native text
            a.mov(__qword_ptr[D], rax);
            a.lea(rbx, __[cell]);                          // RIP-relative address of native data
            a.mov(__qword_ptr[D + 8], rbx);
            a.mov(rcx, __qword_ptr[Support.Data + 0x800]); // absolute (sign-extended disp32) load
            a.add(rcx, 7);
            a.mov(__qword_ptr[D + 16], rcx);
            a.inc(__qword_ptr[Support.Data + 0x808]);      // read-modify-write
            Support.Exit(a);
        });
        var data = new byte[0x810];
        BitConverter.TryWriteBytes(data.AsSpan(0x800), 35UL);
        BitConverter.TryWriteBytes(data.AsSpan(0x808), 99UL);
        return (code, data);
    }

    [Fact]
    public void RipRelativeLoadsAndStoresReachNativeData()
    {
        var (code, data) = RipRelativeDataProgram();
        var r = SameAsNative(code, data);
        Assert.Equal(0x1122334455667788UL, Q(r.DataPage, 0));
        Assert.Equal(Support.Code + 2, Q(r.DataPage, 1));   // the native address, not a cache address
        Assert.Equal(42UL, Q(r.DataPage, 2));
        Assert.Equal(100UL, Q(r.DataPage, 0x808 / 8));
    }

    /// <summary>A RIP-relative read-modify-write of native text.</summary>
    internal static byte[] RipRelativeStoreProgram() => Support.Asm(a =>
        {
            var cell = a.CreateLabel(); var over = a.CreateLabel();
            a.jmp(over);
            a.Label(ref cell);
            a.dq(5);
            a.Label(ref over);
            a.add(__qword_ptr[cell], 37);   // RIP-relative store into native memory
            a.mov(rax, __qword_ptr[cell]);
            a.mov(__qword_ptr[D], rax);
            Support.Exit(a);
        });

    [Fact]
    public void RipRelativeOperandsAreReencodedForTheCache()
    {
        var code = RipRelativeStoreProgram();
        var r = SameAsNative(code);
        Assert.Equal(42UL, Q(r.DataPage, 0));
    }

    /// <summary>loop and jrcxz, taken and not.</summary>
    internal static byte[] CountedLoopsProgram() => Support.Asm(a =>
        {
            var l = a.CreateLabel(); var z = a.CreateLabel(); var nz = a.CreateLabel();
            a.xor(eax, eax);
            a.mov(ecx, 50);
            a.Label(ref l);
            a.add(eax, ecx);
            a.loop(l);
            a.mov(__qword_ptr[D], rax);
            a.jrcxz(z);
            a.mov(__qword_ptr[D + 8], 1);
            a.Label(ref z);
            a.inc(ecx);
            a.jrcxz(nz);
            a.mov(__qword_ptr[D + 16], 2);
            a.Label(ref nz);
            Support.Exit(a);
        });

    [Fact]
    public void CountedLoopsAndJrcxzAreTranslated()
    {
        var code = CountedLoopsProgram();
        var r = SameAsNative(code);
        Assert.Equal(1275UL, Q(r.DataPage, 0));
        Assert.Equal(0UL, Q(r.DataPage, 1));
        Assert.Equal(2UL, Q(r.DataPage, 2));
    }

    [Fact]
    public void AVmcallThatIsNotTheDbtHypercallIsRefusedWithAClearMessage()
    {
        // vmcall in translated code is the DBT hypercall (RAX = 0x444254); any other is reported by address and RAX.
        var code = Support.Asm(a =>
        {
            a.sti();
            a.mov(AssemblerRegisters.eax, 7);
            a.vmcall();
            Support.Exit(a);
        });
        var r = Support.Run(code, translate: true);
        Assert.Equal(StopReason.HostError, r.Result.Reason);
        Assert.Contains("with RAX 0x7: not the DBT hypercall", r.Result.Message);
        Assert.Equal(r.Result.Message, "dbt: vCPU 0: " + r.Dbt!.Stats.Failure);
    }

    [Fact]
    public void TheHypercallQueriesAndSwitchesTheDbt()
    {
        // DBT_QUERY -> 1 (on); DBT_OFF -> 1 (was on) and the rest runs natively (a ring-0 image with no
        // thread list: switchoff is refused with a clear error instead).
        var code = Support.Asm(a =>
        {
            a.mov(AssemblerRegisters.eax, 0x444254);
            a.xor(AssemblerRegisters.edi, AssemblerRegisters.edi);
            a.vmcall();
            a.mov(__qword_ptr[Support.Data], AssemblerRegisters.rax);
            a.mov(AssemblerRegisters.eax, 0x444254);
            a.mov(AssemblerRegisters.edi, 2);
            a.vmcall();
            Support.Exit(a);
        });
        var r = Support.Run(code, translate: true);
        Assert.Equal(1UL, Q(r.DataPage, 0));
        Assert.Equal(StopReason.HostError, r.Result.Reason);
        Assert.Contains("switchoff needs the kernel's thread list", r.Result.Message);
    }
}
