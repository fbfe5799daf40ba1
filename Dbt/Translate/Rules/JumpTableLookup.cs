using Harness.Dbt.Clients;
using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// The inline jumptable lookup shared by every indirect branch (<see cref="IndirectRule"/>, and in
/// no-callret the call and ret rules), for a target already on top of the stack. Scratch registers
/// are pushed on the current stack (never a global or per-CPU cell); a level-1 hit replaces the
/// target slot with tx and leaves by <c>ret</c> (or <c>ret popBytes</c>), which pops it, so the stack
/// ends exactly as the native branch leaves it. A level-1 miss jumps to the shared level-2 routine
/// (<see cref="CodeCache.Stubs"/>), and a level-2 miss enters the dispatcher.
/// <code>
///   pushfq; cli
///   push rax; push rbx
///   mov rax, [rsp+24]; mov ebx, eax; and ebx, 0x3FF0; add rbx, gs:[jumptable]
///   cmp rax, [rbx]; jne level2
///   mov rax, [rbx+8]; mov [rsp+24], rax
///   pop rbx; pop rax; popfq; ret       ; to tx
/// </code>
/// With clients attached, the miss gets a path of its own so that both outcomes can be observed
/// (<see cref="LookupPoint"/>): <c>cmp rax, [rbx]; je Hit; (miss); jmp level2; Hit: (hit)</c>. The
/// client code there runs with the flags saved and interrupts off.
/// </summary>
internal static class JumpTableLookup
{
    public static void Emit(Emitter e, ushort popBytes)
    {
        var clients = e.Clients;
        e.Add(Instruction.Create(Code.Pushfq));
        if (!e.Options.PlantedLookupWithInterrupts) e.Add(Instruction.Create(Code.Cli));
        clients?.Lookup(e, LookupPoint.Start);
        e.Add(Instruction.Create(Code.Push_r64, Register.RAX));
        e.Add(Instruction.Create(Code.Push_r64, Register.RBX));
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RAX, new MemoryOperand(Register.RSP, 24)));
        e.Add(Instruction.Create(Code.Mov_r32_rm32, Register.EBX, Register.EAX));
        e.Add(Instruction.Create(Code.And_rm32_imm32, Register.EBX, (int)JumpTable.IndexMask));
        e.Add(Instruction.Create(Code.Add_r64_rm64, Register.RBX, Emitter.Gs(e.PerCpu.JumpTablePtr)));
        e.Add(Instruction.Create(Code.Cmp_r64_rm64, Register.RAX, new MemoryOperand(Register.RBX)));
        if (clients is null) e.BranchToCache(Emitter.Jcc(ConditionCode.ne), e.Translator.Cache.JumpTableL2);
        else
        {
            int hit = e.BranchForward(Code.Je_rel32_64);
            clients.Lookup(e, LookupPoint.Level1Miss);
            e.BranchToCache(Emitter.Jmp, e.Translator.Cache.JumpTableL2);
            e.Bind(hit);
            clients.Lookup(e, LookupPoint.Level1Hit);
        }
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RAX, new MemoryOperand(Register.RBX, 8)));
        e.Add(Instruction.Create(Code.Mov_rm64_r64, new MemoryOperand(Register.RSP, 24), Register.RAX));
        e.Add(Instruction.Create(Code.Pop_r64, Register.RBX));
        e.Add(Instruction.Create(Code.Pop_r64, Register.RAX));
        e.Add(Instruction.Create(Code.Popfq));
        e.Add(popBytes == 0 ? Instruction.Create(Code.Retnq) : Instruction.Create(Code.Retnq_imm16, popBytes));
    }
}
