using Harness.Dbt.Indirect;
using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// no-callret, call rel / call r/m64: push the native return address (kernel text lies in the top
/// 2 GiB, so a sign-extended imm32 holds it), then jmp to the target (a chained edge, or the
/// jumptable lookup for an indirect call). The block ends: the callee's ret is an indirect branch
/// to the native return address, whose translation is a block of its own.
/// </summary>
internal sealed class NativeReturnCallRule(bool indirect) : Rule
{
    public override string Name => indirect ? "no-callret-indirect-call" : "no-callret-call";
    public override Flow Emit(Emitter e)
    {
        var n = e.Native;
        ulong ret = n.NextIP;
        if ((ulong)(long)(int)ret != ret) throw new UnsupportedInstructionException(n, $"no-callret: the return address 0x{ret:x} does not fit a sign-extended imm32");
        if (indirect && !IndirectRule.Supported(n, afterPush: true)) return Rulebook.Unsupported.Emit(e);
        e.Add(Instruction.Create(Code.Pushq_imm32, (int)ret));
        if (indirect) IndirectRule.EmitLookup(e, n, wordsPushed: 1);
        else e.BranchToNative(Emitter.Jmp, n.NearBranch64, EdgeKind.Jmp);
        return Flow.EndBlock;
    }
}

/// <summary>no-callret, ret / ret imm16: an indirect branch through the return address already on the stack.</summary>
internal sealed class NativeReturnRetRule : Rule
{
    public override string Name => "no-callret-ret";
    public override Flow Emit(Emitter e)
    {
        ushort n = e.Native.Op0Kind == OpKind.Immediate16 ? e.Native.Immediate16 : (ushort)0;
        // ret imm16: the lookup first moves the return address (and its saved flags) up over the n
        // released bytes, so the lookup, its shared level-2 routine and the dispatcher's miss path
        // only ever see a plain ret. (The level-2 hit and the miss left RSP n bytes low: found by the
        // dispatcher-entry state check.) The move is inside the lookup's cli: done before it, with
        // interrupts on, a frame could hold a point half way through the ret, which no native state
        // matches (flush-equals-fresh found it: switchoff left such a frame in the old cache).
        if (n != 0 && e.Options.PlantedRetImmMovedWithInterrupts)
        {
            // Planted bug (DbtOptions.PlantedRetImmMovedWithInterrupts): the move before the cli.
            e.Add(Instruction.Create(Code.Push_rm64, new MemoryOperand(Register.RSP)));
            e.Add(Instruction.Create(Code.Pop_rm64, new MemoryOperand(Register.RSP, n)));
            e.Add(Instruction.Create(Code.Lea_r64_m, Register.RSP, new MemoryOperand(Register.RSP, n)));
            n = 0;
        }
        JumpTableLookup.EmitStack(e, popBytes: 0, releaseBytes: n);
        return Flow.EndBlock;
    }
}
