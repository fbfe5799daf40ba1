using Harness.Dbt.Indirect;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// jmp r/m64 and call r/m64: an inline lookup in this CPU's jumptable (<see cref="JumpTableLookup"/>),
/// with interrupts cleared around it, in the form the operand allows: a target register is hashed
/// and compared where it is (register form), a memory operand is loaded with its own addressing
/// (memory form: RSP- and RIP-relative forms keep their meaning). For call (the paper's Figure 7),
/// the code-cache address of the continuation is pushed first, so the callee sees a code-cache
/// return address and its plain ret lands back in the cache.
/// <code>
///   [push imm32 continuation]         ; call only
///   (the lookup: leaves by ret to tx(T))
/// </code>
/// </summary>
internal sealed class IndirectRule(bool call) : Rule
{
    public override string Name => call ? "indirect-call" : "indirect-jmp";
    public override Flow Emit(Emitter e)
    {
        if (!Supported(e.Native, afterPush: call)) return Rulebook.Unsupported.Emit(e);
        int cont = call ? e.BeginContinuationPush() : -1;
        EmitLookup(e, e.Native, wordsPushed: call ? 1 : 0);
        if (call) e.EndContinuationPush(cont);
        return call ? Flow.Continue : Flow.EndBlock;
    }

    /// <summary>
    /// Whether EmitLookup can translate the operand of jmp/call r/m64 n; afterPush: the rule pushes
    /// a word first (then "call *%rsp" would see RSP off by 8: not translated).
    /// </summary>
    internal static bool Supported(in Instruction n, bool afterPush) => n.Op0Kind == OpKind.Register
        ? n.Op0Register.GetSize() == 8 && !(afterPush && n.Op0Register == Register.RSP)
        : n.MemorySize is MemorySize.QwordOffset or MemorySize.UInt64;

    /// <summary>
    /// The jumptable lookup of n's target (n: jmp/call r/m64, <see cref="Supported"/>);
    /// wordsPushed: words the rule pushed since n's start, which an RSP-based operand skips.
    /// </summary>
    internal static void EmitLookup(Emitter e, in Instruction n, int wordsPushed)
    {
        if (n.Op0Kind != OpKind.Register) JumpTableLookup.EmitMemory(e, n, wordsPushed);
        else if (n.Op0Register != Register.RSP) JumpTableLookup.EmitRegister(e, n.Op0Register);
        else
        {
            // jmp *%rsp: the register form cannot compare a register its own pushes move.
            e.Add(Instruction.Create(Code.Push_r64, Register.RSP));
            JumpTableLookup.EmitStack(e, popBytes: 0);
        }
    }

    /// <summary>
    /// "mov rax, m64" with the memory operand of n (base, index, scale, displacement, segment; a
    /// RIP-relative operand holds its absolute address, which the layout re-encodes); words: words
    /// on the stack above n's RSP when the load runs, which an RSP-based operand skips.
    /// </summary>
    internal static Instruction TargetLoad(in Instruction n, int words)
    {
        long disp = (long)n.MemoryDisplacement64 + (n.MemoryBase == Register.RSP ? 8L * words : 0);
        var m = new MemoryOperand(n.MemoryBase, n.MemoryIndex, n.MemoryIndexScale, disp, n.MemoryDisplSize, false, n.SegmentPrefix);
        return Instruction.Create(Code.Mov_r64_rm64, Register.RAX, m);
    }
}
