using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// jmp r/m64 and call r/m64: an inline lookup in this CPU's jumptable (<see cref="JumpTableLookup"/>),
/// with interrupts cleared around it. The target is computed by <c>push r/m64</c> (same operand, so
/// RSP- and RIP-relative forms keep their meaning) onto the current stack. For call (the paper's
/// Figure 7), the code-cache address of the continuation is pushed first, so the callee sees a
/// code-cache return address and its plain ret lands back in the cache.
/// <code>
///   [push imm32 continuation]         ; call only
///   push r/m64                         ; target T
///   (the lookup: leaves by ret to tx(T))
/// </code>
/// </summary>
internal sealed class IndirectRule(bool call) : Rule
{
    public override string Name => call ? "indirect-call" : "indirect-jmp";
    public override Flow Emit(Emitter e)
    {
        // For call, the continuation is pushed first: an RSP-based operand is 8 further up.
        if (!TryTargetPush(e.Native, afterPush: call, out var push)) return Rulebook.Unsupported.Emit(e);
        int cont = call ? e.BeginContinuationPush() : -1;
        e.Add(push);
        JumpTableLookup.Emit(e, popBytes: 0);
        if (call) e.EndContinuationPush(cont);
        return call ? Flow.Continue : Flow.EndBlock;
    }

    /// <summary>
    /// "push r/m64" computing an indirect branch's target with the operand of the native instruction
    /// (so RSP- and RIP-relative forms keep their meaning); afterPush: one more word is already on the
    /// stack, so an RSP-based operand moves up 8 (and "push rsp" would be off by 8: not translated).
    /// </summary>
    internal static bool TryTargetPush(in Instruction n, bool afterPush, out Instruction push)
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
}
