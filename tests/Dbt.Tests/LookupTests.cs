using Harness.Dbt.Clients;
using Harness.Dbt.Translate;
using Harness.Smp;
using Harness.Smp.Control;
using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Tests;

/// <summary>
/// The inline jumptable lookup's forms (<c>JumpTableLookup</c>): the register form through every
/// target register (each has its own level-2 entry), the memory form through the operand shapes the
/// kernel uses, level-1 conflicts that make both reach level 2, the native state seen by the target
/// and after the return, and the recovery points of the lookups' prefixes.
/// </summary>
public class LookupTests
{
    private const ulong D = Support.Data;
    // Data page layout: E = registers and flags at the target's entry, then per branch i the copy of
    // E and the registers after it (32 words each), a counter per target, the table of targets.
    private const ulong E = D, Slots = D + 0x100, Counters = D + 0xE00, Table = D + 0xF00, Continuation = D + 0xFF8;
    private const int Words = 17; // 16 GPRs (RSP included) + RFLAGS

    /// <summary>Targets: T0 and T1 share a level-1 slot (bits 4..13) and a level-2 group; T2 another slot.</summary>
    private static readonly ulong[] Targets = [Support.Code + 0x10A50, Support.Code + 0x14A50, Support.Code + 0x18B60];
    /// <summary>T0 (miss), T1 (miss, evicts T0 from level 1), T0 and T0 (level-1 misses, level-2 hits), T1 (level-1 hit), T2 (miss).</summary>
    private static readonly int[] Sequence = [0, 1, 0, 0, 1, 2];
    private const ulong Flags = 0x8D5; // CF PF AF ZF SF OF, IF clear (ring 0, no interrupts)

    private static readonly Register[] Gprs =
    [
        Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RBP, Register.RSI, Register.RDI,
        Register.R8, Register.R9, Register.R10, Register.R11, Register.R12, Register.R13, Register.R14, Register.R15,
    ];

    public static TheoryData<string, bool, string> RegisterCases()
    {
        var d = new TheoryData<string, bool, string>();
        foreach (var r in Gprs)
            foreach (string config in new[] { "default", "no-callret" })
            {
                d.Add(r.ToString().ToLowerInvariant(), true, config);
                d.Add(r.ToString().ToLowerInvariant(), false, config);
            }
        return d;
    }

    public static TheoryData<string, bool, string> MemoryCases()
    {
        var d = new TheoryData<string, bool, string>();
        foreach (string form in new[] { "[rax]", "[rbx+8]", "[rsp+8]", "[rip+table]", "[table+rax*8]", "[rbx+rax*8]" })
            foreach (string config in new[] { "default", "no-callret" })
            {
                d.Add(form, true, config);
                d.Add(form, false, config);
            }
        return d;
    }

    [Theory]
    [MemberData(nameof(RegisterCases))]
    public void ARegisterTargetReachesEveryTargetWithTheNativeState(string register, bool call, string config) =>
        SameAsNative(register, call, config);

    [Theory]
    [MemberData(nameof(MemoryCases))]
    public void AMemoryTargetReachesEveryTargetWithTheNativeState(string form, bool call, string config) =>
        SameAsNative(form, call, config);

    private static void SameAsNative(string form, bool call, string config)
    {
        var code = Program(form, call);
        var options = config == "default" ? DbtOptions.Default : DbtOptions.NoCallRet;
        var native = Run(code, null);
        var tx = Run(code, options);
        var prof = Run(code, options with { Clients = ["prof"] });
        Assert.Equal(native.Data, tx.Data);
        Assert.Equal(native.Data, prof.Data);
        // Each target ran as often as the sequence says (the data page also holds the states).
        for (int t = 0; t < Targets.Length; t++)
            Assert.Equal((ulong)Sequence.Count(s => s == t), BitConverter.ToUInt64(native.Data, (int)(Counters - D) + 8 * t));
        // The repeated T0 calls after T1 took its level-1 slot were resolved by level 2 (through this
        // form's entry), not by the dispatcher: one dispatcher miss per distinct target (plus, for
        // jmp and no-callret, one per distinct way back).
        int ways = call && config == "default" ? 0 : Sequence.Length;
        Assert.Equal(Targets.Length + ways, tx.Stats.IndirectDispatches);
        Assert.Equal(Targets.Length + ways, prof.Stats.IndirectDispatches);
        Assert.True(prof.Prof!.Value.Level2Hits >= 2, prof.Prof.ToString());
    }

    /// <summary>Sets every GPR to a distinct value, then takes the sequence's branches through form.</summary>
    private static byte[] Program(string form, bool call)
    {
        var a = new Assembler(64);
        var tables = Targets.Select(_ => a.CreateLabel()).ToArray();
        foreach (var (t, k) in Targets.Select((t, k) => (t, k)))
            a.mov(__qword_ptr[Table + (ulong)(8 * k)], (int)(long)t);
        for (int g = 0; g < Gprs.Length; g++)
            a.mov(new AssemblerRegister64(Gprs[g]), 0x1111_0000_0000_0000UL + (ulong)g * 0x0101_0101);
        for (int i = 0; i < Sequence.Length; i++)
        {
            int n = Sequence[i];
            ulong target = Targets[n], entry = Table + (ulong)(8 * n);
            var back = a.CreateLabel();
            // The target's way back for jmp: an indirect jmp through Continuation.
            if (!call)
            {
                a.push(rax);
                a.lea(rax, __[back]);
                a.mov(__qword_ptr[Continuation], rax);
                a.pop(rax);
            }
            switch (form)
            {
                case "[rax]": a.mov(rax, entry); break;
                case "[rbx+8]": a.mov(rbx, entry - 8); break;
                case "[rsp+8]": a.push((int)(long)target); a.push(0); break;
                case "[rip+table]" or "[table+rax*8]": a.mov(eax, n); break;
                case "[rbx+rax*8]": a.mov(eax, n); a.mov(rbx, Table); break;
                default: a.mov(new AssemblerRegister64(Parse(form)), target); break;
            }
            a.push((int)Flags);
            a.popfq();
            switch (form)
            {
                case "[rax]": Branch(a, call, __qword_ptr[rax]); break;
                case "[rbx+8]": Branch(a, call, __qword_ptr[rbx + 8]); break;
                case "[rsp+8]": Branch(a, call, __qword_ptr[rsp + 8]); break;
                case "[rip+table]": Branch(a, call, __qword_ptr[tables[n]]); break;
                case "[table+rax*8]": Branch(a, call, __qword_ptr[rax * 8 + unchecked((long)Table)]); break;
                case "[rbx+rax*8]": Branch(a, call, __qword_ptr[rbx + rax * 8]); break;
                default:
                    var r = new AssemblerRegister64(Parse(form));
                    if (call) a.call(r); else a.jmp(r);
                    break;
            }
            a.Label(ref back);
            ulong slot = Slots + (ulong)(i * 2 * Words * 8);
            for (int w = 0; w < Words; w++)
            {
                a.push(__qword_ptr[E + (ulong)(8 * w)]);
                a.pop(__qword_ptr[slot + (ulong)(8 * w)]);
            }
            Record(a, slot + Words * 8);
            if (form == "[rsp+8]") a.add(rsp, 16);
        }
        Support.Exit(a);
        for (int t = 0; t < Targets.Length; t++)
        {
            a.Label(ref tables[t]);
            a.dq(Targets[t]);
        }

        var image = new byte[Targets.Max() - Support.Code + 0x100];
        Array.Fill(image, (byte)0xCC);
        Assemble(a, Support.Code).CopyTo(image, 0);
        for (int t = 0; t < Targets.Length; t++)
        {
            var f = new Assembler(64);
            Record(f, E);
            f.add(__qword_ptr[Counters + (ulong)(8 * t)], 1);
            if (call) f.ret();
            else f.jmp(__qword_ptr[Continuation]);
            Assemble(f, Targets[t]).CopyTo(image, (int)(Targets[t] - Support.Code));
        }
        return image;
    }

    private static void Branch(Assembler a, bool call, AssemblerMemoryOperand m)
    {
        if (call) a.call(m); else a.jmp(m);
    }

    /// <summary>Stores every GPR (RSP in its own slot) and RFLAGS at at, changing nothing.</summary>
    private static void Record(Assembler a, ulong at)
    {
        for (int g = 0; g < 16; g++) a.mov(__qword_ptr[at + (ulong)(8 * g)], new AssemblerRegister64(Register.RAX + g));
        a.pushfq();
        a.pop(__qword_ptr[at + 16 * 8]);
    }

    private static Register Parse(string name) => Enum.Parse<Register>(name, ignoreCase: true);

    private static byte[] Assemble(Assembler a, ulong at)
    {
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), at);
        return ms.ToArray();
    }

    private sealed record LookupRun(byte[] Data, DbtStats Stats, ProfCounts? Prof);

    private static LookupRun Run(byte[] image, DbtOptions? options)
    {
        using var m = new Machine(new MachineOptions
        {
            Vcpus = 1, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20,
            Control = new Deterministic(quantum: 100), MaxInstructions = 10_000_000,
        });
        m.Memory.Write(Support.CodePhys, image);
        var dbt = options is null ? null : KernelDbt.Attach(m, options);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var r = m.Run(cts.Token, entry: Support.Code, setup: v => v.Gpr(4) = Support.StackTop);
        Assert.True(r.Exited && r.ExitStatus == 0, $"{r.Reason}: {r.Message}");
        return new LookupRun(m.Memory.Span(Support.DataPhys, 4096).ToArray(), dbt?.Stats ?? new DbtStats(1), dbt?.Client<Prof>()?.Read());
    }

    // ---- recovery points ------------------------------------------------------------------------

    /// <summary>
    /// The lookup's prefix only pushes words (the continuation, the saved scratch or target register,
    /// the flags) and clears IF, so a vCPU interrupted there maps back to the native branch with those
    /// words popped and, once the flags are saved, RFLAGS from the saved word; from the first
    /// instruction that changes a register on there is no recovery point (interrupts are off), up to
    /// the final ret, which has tx of the target on the stack.
    /// </summary>
    [Theory]
    [InlineData("call r10", "push imm;push rbx;pushfq;cli;mov ebx,r10d")]
    [InlineData("call rbx", "push imm;push rax;pushfq;cli;mov eax,ebx")]
    [InlineData("jmp r10", "push rbx;pushfq;cli;mov ebx,r10d")]
    [InlineData("call [rbx+8]", "push imm;push rax;pushfq;cli;mov rax,[rbx+8]")]
    [InlineData("jmp [rbx+8]", "push rax;pushfq;cli;mov rax,[rbx+8]")]
    public void TheLookupsPrefixMapsBackToTheNativeBranch(string branch, string prefix)
    {
        var a = new Assembler(64);
        var f = a.CreateLabel();
        a.lea(r10, __[f]);
        a.lea(rbx, __[f]);
        a.mov(__qword_ptr[D + 16], rbx);
        a.lea(rbx, __[D + 8]);
        int branchAt = 4;
        switch (branch)
        {
            case "call r10": a.call(r10); break;
            case "call rbx": a.mov(rbx, __qword_ptr[D + 16]); a.call(rbx); branchAt++; break;
            case "jmp r10": a.jmp(r10); break;
            case "call [rbx+8]": a.call(__qword_ptr[rbx + 8]); break;
            case "jmp [rbx+8]": a.jmp(__qword_ptr[rbx + 8]); break;
        }
        a.nop();
        Support.Exit(a);
        a.Label(ref f);
        if (branch.StartsWith("call")) a.ret();
        else Support.Exit(a);
        var code = Assemble(a, Support.Code);

        using var m = new Machine(new MachineOptions
        {
            Vcpus = 1, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20,
            Control = new Deterministic(quantum: 100), MaxInstructions = 1_000_000,
        });
        m.Memory.Write(Support.CodePhys, code);
        var dbt = KernelDbt.Attach(m, DbtOptions.Default);
        var r = m.Run(entry: Support.Code, setup: v => v.Gpr(4) = Support.StackTop);
        Assert.True(r.Exited, $"{r.Reason}: {r.Message}");

        var natives = Decode(code, Support.Code);
        ulong native = natives[branchAt].IP;
        var block = dbt.Translator.Blocks.Single(b => b.NativeStart == Support.Code);
        var cache = Decode(m.Memory.Span(dbt.Cache.ToPhys(block.CacheStart), block.CacheLength).ToArray(), block.CacheStart);
        var points = block.Points.ToDictionary(p => p.Offset, p => p.Recovery);
        Recovery? At(Instruction i) => points.TryGetValue((uint)(i.IP - block.CacheStart), out var rec) ? rec : null;

        // The translation of the branch: from the first instruction whose recovery is the branch itself
        // after the identity copies before it, to the ret.
        int start = cache.FindIndex(i => At(i) is { Native: var n } && n == native);
        int ret = cache.FindIndex(start, i => i.Mnemonic == Mnemonic.Ret);
        var expected = prefix.Split(';');
        var formatter = new IntelFormatter();
        formatter.Options.UppercaseHex = false;
        for (int k = 0; k < expected.Length; k++)
        {
            var i = cache[start + k];
            var o = new StringOutput();
            formatter.Format(i, o);
            string text = o.ToStringAndReset().Replace("qword ptr ", "").Replace(" ", "");
            string want = expected[k].Replace(" ", "");
            if (want == "pushimm") Assert.Equal(Code.Pushq_imm32, i.Code);
            else Assert.Equal(want, text);
            // k words pushed so far; the flags word (pushed last but one before cli) once pushfq ran.
            int pushed = Math.Min(k, expected.Length - 2);
            int flagsWord = k >= expected.Length - 2 ? 0 : -1;
            Assert.Equal(new Recovery(native, pushed, flagsWord), At(i));
        }
        for (int k = start + expected.Length; k < ret; k++)
            Assert.True(At(cache[k]) is null, $"{cache[k]} (in the lookup with interrupts off) has a recovery point {At(cache[k])}");
        Assert.Equal(new Recovery(0, 1, -1, TargetOnStack: true), At(cache[ret]));
        // After a call, the continuation is the next native instruction (nop), with nothing to undo.
        if (branch.StartsWith("call"))
            Assert.Equal(new Recovery(natives[branchAt + 1].IP, 0, -1), At(cache[ret + 1]));
    }

    private static List<Instruction> Decode(byte[] bytes, ulong ip)
    {
        var d = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(bytes), ip);
        var list = new List<Instruction>();
        while (d.IP < ip + (ulong)bytes.Length)
        {
            d.Decode(out var i);
            list.Add(i);
        }
        return list;
    }
}
