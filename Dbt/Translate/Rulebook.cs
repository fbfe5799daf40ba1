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
        // Control leaves the kernel's translated code (to user mode or through a far return):
        // identity, and the block ends (milestone 2 translates the way back in).
        [Mnemonic.Iret] = IdentityEnd, [Mnemonic.Iretd] = IdentityEnd, [Mnemonic.Iretq] = IdentityEnd,
        [Mnemonic.Sysret] = IdentityEnd, [Mnemonic.Sysretq] = IdentityEnd, [Mnemonic.Sysexit] = IdentityEnd,
        [Mnemonic.Syscall] = IdentityEnd, [Mnemonic.Retf] = IdentityEnd,
        [Mnemonic.Hlt] = Identity,
        // The dispatcher's own call-out: native code must not use it while translated.
        [Mnemonic.Vmcall] = Unsupported,
    };

    public static Rule For(in Instruction ins)
    {
        if (byMnemonic.TryGetValue(ins.Mnemonic, out var r)) return r;
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
    /// jmp r/m64 and call r/m64 (milestone 1: through the dispatcher every time). The target is
    /// computed by <c>push r/m64</c> (same operand, so RSP-relative and RIP-relative forms keep their
    /// meaning) onto the current stack — scratch on the kernel stack, never a global cell — then
    /// <c>jmp</c> to the shared indirect-jmp entry, or <c>call</c> the indirect-call entry so that the
    /// pushed return address is the code-cache address of the continuation (the paper's Figure 7).
    /// The dispatcher pops the target and leaves the stack exactly as the native branch would.
    /// </summary>
    private sealed class IndirectRule(bool call) : Rule
    {
        public override string Name => call ? "indirect-call" : "indirect-jmp";
        public override Flow Emit(Emitter e)
        {
            var n = e.Native;
            Instruction push;
            if (n.Op0Kind == OpKind.Register)
            {
                if (n.Op0Register.GetSize() != 8) return Unsupported.Emit(e);
                push = Instruction.Create(Code.Push_r64, n.Op0Register);
            }
            else
            {
                if (n.MemorySize is not (MemorySize.QwordOffset or MemorySize.UInt64)) return Unsupported.Emit(e);
                push = n;
                push.Code = Code.Push_rm64;
            }
            e.Add(push);
            var entry = call ? e.Translator.Cache.IndirectCallEntry : e.Translator.Cache.IndirectJmpEntry;
            e.BranchToCache(call ? Emitter.Call : Emitter.Jmp, entry);
            return call ? Flow.Continue : Flow.EndBlock;
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
public sealed class UnsupportedInstructionException(Instruction ins)
    : Exception($"the translator has no rule for '{ins}' at 0x{ins.IP:x}")
{
    public ulong Address { get; } = ins.IP;
}
