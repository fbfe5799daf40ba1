using Iced.Intel;

namespace Harness.Dbt.Translate;

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
internal sealed class IretqRule : Rule
{
    public override string Name => "iretq";
    public override Flow Emit(Emitter e)
    {
        if (!e.Options.PlantedNoTxNextPcRestore)
        {
            e.Add(Instruction.Create(Code.Pushfq));
            e.Add(Instruction.Create(Code.Test_rm8_imm8, new MemoryOperand(Register.RSP, 16), 3));
            int toUser = e.BranchForward(Code.Jne_rel8_64);
            e.Add(Instruction.Create(Code.Push_rm64, new MemoryOperand(Register.RSP, -16)));
            e.Add(Instruction.Create(Code.Pop_rm64, Emitter.Gs(e.PerCpu.TxNextPcLoc)));
            e.Bind(toUser);
            e.Add(Instruction.Create(Code.Popfq));
        }
        e.Identity();
        return Flow.EndBlock;
    }
}

/// <summary>
/// DRK-style iretq (<see cref="DbtOptions.InterruptsViaDispatcher"/>): a dispatcher exit. The frame's
/// RIP is native, so the call-out replaces it by its translation (returning to kernel mode) and the
/// dispatcher leaves to a real iretq in the stub page. No tx-nextpc-loc restore: the gate stubs gave
/// the handler a native frame, and nothing of the interrupted code's dispatcher exit is pending.
/// <code>
///   jmp call-out        ; pushfq; cli; vmcall -> frame RIP = tx; leave to "iretq"
/// </code>
/// </summary>
internal sealed class DrkIretqRule : Rule
{
    public override string Name => "drk-iretq";
    public override Flow Emit(Emitter e)
    {
        e.CallOut(e.Translator.CallOuts.DrkIretq, e.NextNative, exitsDirectly: true);
        return Flow.EndBlock;
    }
}
