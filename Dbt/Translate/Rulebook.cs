using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>What a rule tells the block translator after emitting: keep translating the fall-through, or stop.</summary>
internal enum Flow { Continue, EndBlock }

/// <summary>One translation rule: a family of native instructions and how each becomes cache code.</summary>
internal abstract class Rule
{
    public abstract string Name { get; }
    public abstract Flow Emit(Emitter e);
}

/// <summary>
/// The rulebook: one rule per instruction family, chosen by data — first by mnemonic (the
/// exceptions), then by Iced's flow-control class. Adding a family means adding a row here.
/// </summary>
internal static class Rulebook
{
    public static readonly Rule Identity = new IdentityRule(false);
    public static readonly Rule IdentityEnd = new IdentityRule(true);
    public static readonly Rule DirectJmp = new DirectJmpRule();
    public static readonly Rule DirectJcc = new DirectJccRule();
    public static readonly Rule CountedJcc = new CountedJccRule();
    public static readonly Rule DirectCall = new DirectCallRule();
    public static readonly Rule IndirectJmp = new IndirectRule(call: false);
    public static readonly Rule IndirectCall = new IndirectRule(call: true);
    public static readonly Rule Unsupported = new UnsupportedRule();
    public static readonly Rule Iretq = new IretqRule();
    public static readonly Rule FarReturn = new FarReturnRule();
    // The no-callret configuration: native return addresses on the stack, ret as an indirect branch.
    public static readonly Rule NativeReturnCall = new NativeReturnCallRule(indirect: false);
    public static readonly Rule NativeReturnIndirectCall = new NativeReturnCallRule(indirect: true);
    public static readonly Rule NativeReturnRet = new NativeReturnRetRule();
    public static readonly Rule Wrmsr = new MsrRule(write: true);
    public static readonly Rule Rdmsr = new MsrRule(write: false);
    public static readonly Rule Lidt = new DescriptorTableRule(load: true);
    public static readonly Rule Sidt = new DescriptorTableRule(load: false);

    private static readonly Dictionary<FlowControl, Rule> byFlow = new()
    {
        [FlowControl.Next] = Identity,
        [FlowControl.UnconditionalBranch] = DirectJmp,
        [FlowControl.ConditionalBranch] = DirectJcc,
        [FlowControl.Call] = DirectCall,
        [FlowControl.IndirectBranch] = IndirectJmp,
        [FlowControl.IndirectCall] = IndirectCall,
        [FlowControl.Return] = IdentityEnd,      // ret (imm16): call/ret identity, the return address is a cache address
        [FlowControl.Interrupt] = Identity,      // int n / int3: the handler's iretq returns to the next cache instruction
        [FlowControl.Exception] = IdentityEnd,   // ud0/ud1/ud2: never falls through
        [FlowControl.XbeginXabortXend] = Unsupported,
    };

    private static readonly Dictionary<Mnemonic, Rule> byMnemonic = new()
    {
        // Counted/rcx branches exist only with rel8: branch over a chained rel32 jmp.
        [Mnemonic.Jrcxz] = CountedJcc, [Mnemonic.Jecxz] = CountedJcc,
        [Mnemonic.Loop] = CountedJcc, [Mnemonic.Loope] = CountedJcc, [Mnemonic.Loopne] = CountedJcc,
        // iretq restores tx-nextpc-loc from the frame's redundant slot (the save is EntryPath's).
        [Mnemonic.Iretq] = Iretq,
        [Mnemonic.Iret] = IdentityEnd, [Mnemonic.Iretd] = IdentityEnd,
        // The kernel's interrupt and syscall entry points: followed so the shadow tables match.
        [Mnemonic.Lidt] = Lidt, [Mnemonic.Sidt] = Sidt,
        [Mnemonic.Wrmsr] = Wrmsr, [Mnemonic.Rdmsr] = Rdmsr,
        [Mnemonic.Sysret] = IdentityEnd, [Mnemonic.Sysretq] = IdentityEnd, [Mnemonic.Sysexit] = IdentityEnd,
        [Mnemonic.Syscall] = IdentityEnd, [Mnemonic.Retf] = FarReturn,
        [Mnemonic.Hlt] = Identity,
        // The dispatcher's own call-out: native code must not use it while translated.
        [Mnemonic.Vmcall] = Unsupported,
    };

    public static Rule For(in Instruction ins, DbtOptions options)
    {
        if (byMnemonic.TryGetValue(ins.Mnemonic, out var r)) return r;
        if (!options.CallRet)
        {
            if (ins.FlowControl == FlowControl.Return) return ins.Mnemonic == Mnemonic.Ret ? NativeReturnRet : Unsupported;
            if (ins.FlowControl == FlowControl.Call && ins.Op0Kind == OpKind.NearBranch64) return NativeReturnCall;
            if (ins.FlowControl == FlowControl.IndirectCall) return NativeReturnIndirectCall;
        }
        var flow = ins.FlowControl;
        // Far direct/indirect jumps and calls (jmp/call m16:64) are not supported.
        if (flow is FlowControl.IndirectBranch or FlowControl.IndirectCall && ins.Op0Kind == OpKind.Memory && ins.MemorySize is MemorySize.SegPtr16 or MemorySize.SegPtr32 or MemorySize.SegPtr64)
            return Unsupported;
        if (flow is FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch or FlowControl.Call && ins.Op0Kind is not (OpKind.NearBranch64))
            return Unsupported;
        return byFlow.TryGetValue(flow, out r) ? r : Unsupported;
    }

    // ---- the rules ------------------------------------------------------------------------------

    /// <summary>Ordinary instructions: copied; RIP-relative operands re-encoded to reach the same data.</summary>
    private sealed class IdentityRule(bool ends) : Rule
    {
        public override string Name => ends ? "identity-end" : "identity";
        public override Flow Emit(Emitter e)
        {
            e.Identity();
            return ends ? Flow.EndBlock : Flow.Continue;
        }
    }

    /// <summary>jmp rel: a chained rel32 jmp to the target's translation (through an edge until chained).</summary>
    private sealed class DirectJmpRule : Rule
    {
        public override string Name => "direct-jmp";
        public override Flow Emit(Emitter e)
        {
            e.BranchToNative(Emitter.Jmp, e.Native.NearBranch64, EdgeKind.Jmp);
            return Flow.EndBlock;
        }
    }

    /// <summary>jcc rel: a chained rel32 jcc; translation continues with the fall-through.</summary>
    private sealed class DirectJccRule : Rule
    {
        public override string Name => "direct-jcc";
        public override Flow Emit(Emitter e)
        {
            e.BranchToNative(Emitter.Jcc(e.Native.ConditionCode), e.Native.NearBranch64, EdgeKind.Jcc);
            return Flow.Continue;
        }
    }

    /// <summary>
    /// jrcxz/jecxz/loop/loope/loopne (rel8 only): <c>op X; jmp short Over; X: jmp rel32 target (chained); Over:</c>.
    /// </summary>
    private sealed class CountedJccRule : Rule
    {
        public override string Name => "counted-jcc";
        public override Flow Emit(Emitter e)
        {
            var op = e.Native;
            op.NearBranch64 = e.LabelAhead(2);                                   // X
            e.Add(op);
            e.Add(Instruction.CreateBranch(Code.Jmp_rel8_64, e.LabelAhead(2)));   // Over
            e.BranchToNative(Emitter.Jmp, e.Native.NearBranch64, EdgeKind.Jcc);
            return Flow.Continue;
        }
    }

    /// <summary>
    /// call rel (call/ret identity): <c>call tx(X)</c> (through an edge until chained) pushes the code-cache
    /// address of the next translated instruction, and the fall-through continues in the same block, so
    /// the callee's plain <c>ret</c> lands back in the cache.
    /// </summary>
    private sealed class DirectCallRule : Rule
    {
        public override string Name => "direct-call";
        public override Flow Emit(Emitter e)
        {
            e.BranchToNative(Emitter.Call, e.Native.NearBranch64, EdgeKind.Call);
            return Flow.Continue;
        }
    }

    /// <summary>
    /// jmp r/m64 and call r/m64: an inline lookup in this CPU's jumptable (<see cref="JumpTable"/>),
    /// with interrupts cleared around it. The target is computed by <c>push r/m64</c> (same operand,
    /// so RSP- and RIP-relative forms keep their meaning) onto the current stack, scratch registers
    /// are pushed there too (never a global or per-CPU cell), and a level-1 hit replaces the target
    /// slot with tx and leaves by <c>ret</c>, which pops it: the stack is then exactly the native one.
    /// A level-1 miss jumps to the shared level-2 routine, and a level-2 miss enters the dispatcher.
    /// For call (the paper's Figure 7), the code-cache address of the continuation is pushed first,
    /// so the callee sees a code-cache return address and its plain ret lands back in the cache.
    /// <code>
    ///   [push imm32 continuation]         ; call only
    ///   push r/m64                         ; target T
    ///   pushfq; cli
    ///   push rax; push rbx
    ///   mov rax, [rsp+24]; mov ebx, eax; and ebx, 0x3FF0; add rbx, gs:[jumptable]
    ///   cmp rax, [rbx]; jne level2
    ///   mov rax, [rbx+8]; mov [rsp+24], rax
    ///   pop rbx; pop rax; popfq; ret       ; to tx
    /// </code>
    /// </summary>
    private sealed class IndirectRule(bool call) : Rule
    {
        public override string Name => call ? "indirect-call" : "indirect-jmp";
        public override Flow Emit(Emitter e)
        {
            // For call, the continuation is pushed first: an RSP-based operand is 8 further up.
            if (!TryTargetPush(e.Native, afterPush: call, out var push)) return Unsupported.Emit(e);
            int cont = call ? e.BeginContinuationPush() : -1;
            e.Add(push);
            EmitLookup(e, popBytes: 0);
            if (call) e.EndContinuationPush(cont);
            return call ? Flow.Continue : Flow.EndBlock;
        }
    }

    /// <summary>
    /// "push r/m64" computing an indirect branch's target with the operand of the native instruction
    /// (so RSP- and RIP-relative forms keep their meaning); afterPush: one more word is already on the
    /// stack, so an RSP-based operand moves up 8 (and "push rsp" would be off by 8: not translated).
    /// </summary>
    private static bool TryTargetPush(in Instruction n, bool afterPush, out Instruction push)
    {
        push = default;
        if (n.Op0Kind == OpKind.Register)
        {
            if (n.Op0Register.GetSize() != 8 || (afterPush && n.Op0Register == Register.RSP)) return false;
            push = Instruction.Create(Code.Push_r64, n.Op0Register);
            return true;
        }
        if (n.MemorySize is not (MemorySize.QwordOffset or MemorySize.UInt64)) return false;
        push = n;
        push.Code = Code.Push_rm64;
        if (afterPush && push.MemoryBase == Register.RSP) push.MemoryDisplacement64 += 8;
        return true;
    }

    /// <summary>
    /// The inline jumptable lookup for a target already on top of the stack: leaves by "ret" (or
    /// "ret popBytes") to tx, popping the target slot, so the stack ends exactly as the native
    /// branch leaves it. See <see cref="IndirectRule"/> for the sequence.
    /// </summary>
    private static void EmitLookup(Emitter e, ushort popBytes)
    {
        e.Add(Instruction.Create(Code.Pushfq));
        if (!e.Options.PlantedLookupWithInterrupts) e.Add(Instruction.Create(Code.Cli));
        e.Add(Instruction.Create(Code.Push_r64, Register.RAX));
        e.Add(Instruction.Create(Code.Push_r64, Register.RBX));
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RAX, new MemoryOperand(Register.RSP, 24)));
        e.Add(Instruction.Create(Code.Mov_r32_rm32, Register.EBX, Register.EAX));
        e.Add(Instruction.Create(Code.And_rm32_imm32, Register.EBX, (int)JumpTable.IndexMask));
        e.Add(Instruction.Create(Code.Add_r64_rm64, Register.RBX, Emitter.Gs(e.PerCpu.JumpTablePtr)));
        e.Add(Instruction.Create(Code.Cmp_r64_rm64, Register.RAX, new MemoryOperand(Register.RBX)));
        e.BranchToCache(Emitter.Jcc(ConditionCode.ne), e.Translator.Cache.JumpTableL2);
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RAX, new MemoryOperand(Register.RBX, 8)));
        e.Add(Instruction.Create(Code.Mov_rm64_r64, new MemoryOperand(Register.RSP, 24), Register.RAX));
        e.Add(Instruction.Create(Code.Pop_r64, Register.RBX));
        e.Add(Instruction.Create(Code.Pop_r64, Register.RAX));
        e.Add(Instruction.Create(Code.Popfq));
        e.Add(popBytes == 0 ? Instruction.Create(Code.Retnq) : Instruction.Create(Code.Retnq_imm16, popBytes));
    }

    /// <summary>
    /// lretq (64-bit far return; the kernel's boot-time CS reload is one, docs/kernel-contract.md
    /// section 1): a computed branch that also loads CS, so a host call-out (rare: once per CPU at
    /// boot) pops both and continues at the translation of the popped RIP.
    /// </summary>
    private sealed class FarReturnRule : Rule
    {
        public override string Name => "lretq";
        public override Flow Emit(Emitter e)
        {
            if (e.Native.Code != Code.Retfq) return Unsupported.Emit(e);
            e.CallOut(Kernel.KernelEntries.FarReturn, e.NextNative, e.Native.ToString());
            return Flow.EndBlock;
        }
    }

    /// <summary>
    /// no-callret, call rel / call r/m64: push the native return address (kernel text lies in the top
    /// 2 GiB, so a sign-extended imm32 holds it), then jmp to the target (a chained edge, or the
    /// jumptable lookup for an indirect call). The block ends: the callee's ret is an indirect branch
    /// to the native return address, whose translation is a block of its own.
    /// </summary>
    private sealed class NativeReturnCallRule(bool indirect) : Rule
    {
        public override string Name => indirect ? "no-callret-indirect-call" : "no-callret-call";
        public override Flow Emit(Emitter e)
        {
            var n = e.Native;
            ulong ret = n.NextIP;
            if ((ulong)(long)(int)ret != ret) throw new UnsupportedInstructionException(n, $"no-callret: the return address 0x{ret:x} does not fit a sign-extended imm32");
            Instruction push = default;
            if (indirect && !TryTargetPush(n, afterPush: true, out push)) return Unsupported.Emit(e);
            e.Add(Instruction.Create(Code.Pushq_imm32, (int)ret));
            if (indirect)
            {
                e.Add(push);
                EmitLookup(e, popBytes: 0);
            }
            else e.BranchToNative(Emitter.Jmp, n.NearBranch64, EdgeKind.Jmp);
            return Flow.EndBlock;
        }
    }

    /// <summary>no-callret, ret / ret imm16: an indirect branch through the return address already on the stack.</summary>
    private sealed class NativeReturnRetRule : Rule
    {
        public override string Name => "no-callret-ret";
        public override Flow Emit(Emitter e)
        {
            EmitLookup(e, popBytes: e.Native.Op0Kind == OpKind.Immediate16 ? e.Native.Immediate16 : (ushort)0);
            return Flow.EndBlock;
        }
    }

    /// <summary>
    /// iretq: when it returns to kernel mode, first copy the frame's redundant slot (24 bytes below
    /// the saved RIP, written by the entry translation: <see cref="EntryPath"/>) back into
    /// gs:[tx-nextpc-loc], so that an interrupted dispatcher exit ("popfq; jmp [tx-nextpc-loc]")
    /// jumps where it was going even if the handler went through the dispatcher meanwhile. The slot
    /// is below RSP by then; the kernel runs its exit path with interrupts off, so nothing has
    /// overwritten it. Returning to user mode skips the copy (GS is the user's by then, and no kernel
    /// context on this CPU needs the value).
    /// <code>
    ///   pushfq; test byte [rsp+16], 3; jnz 1f
    ///   push qword [rsp-16]; pop qword gs:[tx-nextpc-loc]
    ///   1: popfq; iretq
    /// </code>
    /// </summary>
    private sealed class IretqRule : Rule
    {
        public override string Name => "iretq";
        public override Flow Emit(Emitter e)
        {
            if (!e.Options.PlantedNoTxNextPcRestore)
            {
                e.Add(Instruction.Create(Code.Pushfq));
                e.Add(Instruction.Create(Code.Test_rm8_imm8, new MemoryOperand(Register.RSP, 16), 3));
                e.Add(Instruction.CreateBranch(Code.Jne_rel8_64, e.LabelAhead(3)));
                e.Add(Instruction.Create(Code.Push_rm64, new MemoryOperand(Register.RSP, -16)));
                e.Add(Instruction.Create(Code.Pop_rm64, Emitter.Gs(e.PerCpu.TxNextPcLoc)));
                e.Add(Instruction.Create(Code.Popfq));
            }
            e.Identity();
            return Flow.EndBlock;
        }
    }

    /// <summary>
    /// wrmsr/rdmsr: the MSRs the DBT shadows (LSTAR, and GS base for wrmsr, whose area holds the
    /// DBT's per-CPU words) go to a host call-out; every other MSR runs natively after an inline
    /// check of ECX (flags saved around it).
    /// <code>
    ///   pushfq; cmp ecx, LSTAR; je X; [cmp ecx, GS_BASE; je X;] popfq; wrmsr; jmp short C
    ///   X: popfq; jmp call-out        ; continues at the next native instruction
    ///   C:
    /// </code>
    /// </summary>
    private sealed class MsrRule(bool write) : Rule
    {
        public override string Name => write ? "wrmsr" : "rdmsr";
        public override Flow Emit(Emitter e)
        {
            uint[] msrs = write ? [Harness.Machine.Vcpu.MsrLstar, Harness.Machine.Vcpu.MsrGsBase] : [Harness.Machine.Vcpu.MsrLstar];
            int checks = msrs.Length * 2;
            e.Add(Instruction.Create(Code.Pushfq));
            for (int k = 0; k < msrs.Length; k++)
            {
                e.Add(Instruction.Create(Code.Cmp_rm32_imm32, Register.ECX, unchecked((int)msrs[k])));
                // X is after: the remaining checks, popfq, the msr instruction, jmp C.
                e.Add(Instruction.CreateBranch(Code.Je_rel8_64, e.LabelAhead(checks - 2 * k - 1 + 3)));
            }
            e.Add(Instruction.Create(Code.Popfq));
            e.Identity();
            e.Add(Instruction.CreateBranch(Code.Jmp_rel8_64, e.LabelAhead(3)));
            e.Add(Instruction.Create(Code.Popfq));
            var kernel = e.Translator.Kernel;
            e.CallOut(write ? kernel.WrmsrCallOut : kernel.RdmsrCallOut, e.NextNative, e.Native.ToString());
            return Flow.Continue;
        }
    }

    /// <summary>lidt/sidt: a host call-out that installs (or reports) the guest's IDT while the vCPU runs the shadow.</summary>
    private sealed class DescriptorTableRule(bool load) : Rule
    {
        public override string Name => load ? "lidt" : "sidt";
        public override Flow Emit(Emitter e)
        {
            var ins = e.Native;
            var kernel = e.Translator.Kernel;
            e.CallOut(load ? (v, rsp) => kernel.Lidt(v, rsp, ins) : (v, rsp) => kernel.Sidt(v, rsp, ins), e.NextNative, ins.ToString());
            return Flow.EndBlock;
        }
    }

    /// <summary>
    /// Instructions the translator does not handle. Translation fails lazily: the block ends just
    /// before it with an edge, and if that edge ever runs, the dispatcher stops the machine naming it.
    /// </summary>
    internal sealed class UnsupportedRule : Rule
    {
        public override string Name => "unsupported";
        public override Flow Emit(Emitter e) => throw new UnsupportedInstructionException(e.Native);
    }
}

/// <summary>A native instruction no rule translates.</summary>
public sealed class UnsupportedInstructionException(Instruction ins, string? why = null)
    : Exception(why is null ? $"the translator has no rule for '{ins}' at 0x{ins.IP:x}" : $"{why} (at 0x{ins.IP:x})")
{
    public ulong Address { get; } = ins.IP;
}
