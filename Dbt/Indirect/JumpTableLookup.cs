using Harness.Dbt.Cache;
using Harness.Dbt.Clients;
using Harness.Dbt.Translate;
using Iced.Intel;

namespace Harness.Dbt.Indirect;

/// <summary>
/// The inline jumptable lookup of every indirect branch (<see cref="IndirectRule"/>, and in
/// no-callret the call and ret rules), in three forms by where the target is. All of them save the
/// flags and clear interrupts first (an interrupt handler on this CPU could otherwise replace the
/// level-1 entry between the hit test and the read of tx), keep scratch values on the current stack
/// only (never a global or per-CPU cell), probe level 1 of this CPU's table (gs:[jumptable]) at
/// <c>target &amp; 0x3FF0</c>, test the hit before reading tx, and on a hit leave by <c>ret</c>
/// with tx in the slot that held the target or a saved register, so the stack ends exactly as the
/// native branch leaves it. A level-1 miss jumps to the shared level-2 routine
/// (<see cref="CodeCache.JumpTableLevel2"/>) at the entry for the form's frame; a level-2 miss
/// enters the dispatcher.
/// <list type="bullet">
/// <item>Register form (jmp/call *%reg, any GPR but RSP; the syscall table's call *%r10), one
/// scratch S (RBX, or RAX for a target in RBX) whose saved value's slot becomes tx's:
/// <code>
///   push S; pushfq; cli
///   mov S32, reg32; and S32, 0x3FF0; add S, gs:[jumptable]
///   cmp reg, [S]; jne level2-entry(reg)
///   push qword [S+8]; mov S, [rsp+16]; pop qword [rsp+8]   ; slot = tx, S restored
///   popfq; ret                                             ; to tx
/// </code>
/// 13 instructions for the one native instruction (14 with a call's continuation push).</item>
/// <item>Memory form (jmp/call *mem: switch tables, function pointers in structs): the target is
/// loaded into RAX, whose saved value's slot becomes tx's (the load runs after cli, so an
/// RSP-relative operand skips the words pushed before it):
/// <code>
///   push rax; pushfq; cli
///   mov rax, mem; push rbx
///   mov ebx, eax; and ebx, 0x3FF0; add rbx, gs:[jumptable]
///   cmp rax, [rbx]; jne level2-memory
///   mov rbx, [rbx+8]; mov rax, [rsp+16]; mov [rsp+16], rbx  ; slot = tx, RAX restored
///   pop rbx; popfq; ret
/// </code>
/// 16 instructions (17 with a call's continuation push).</item>
/// <item>Stack form (no-callret's ret, whose target is already on the stack; jmp *%rsp after a
/// push): two scratch registers, because the hit test needs the target in one and the entry's
/// address in the other:
/// <code>
///   pushfq; cli; push rax; push rbx
///   mov rax, [rsp+24]; mov ebx, eax; and ebx, 0x3FF0; add rbx, gs:[jumptable]
///   cmp rax, [rbx]; jne level2
///   mov rax, [rbx+8]; mov [rsp+24], rax
///   pop rbx; pop rax; popfq; ret [popBytes]
/// </code></item>
/// </list>
/// With clients attached, the miss gets a path of its own so that both outcomes can be observed
/// (<see cref="LookupPoint"/>): <c>cmp; je Hit; (miss); jmp level2; Hit: (hit)</c>. The client code
/// there runs with the flags saved and interrupts off.
/// </summary>
internal static class JumpTableLookup
{
    /// <summary>The register form for a target in reg (a 64-bit GPR other than RSP).</summary>
    public static void EmitRegister(Emitter e, Register reg)
    {
        var s = JumpTableLevel2.ScratchFor(reg);
        e.Add(Instruction.Create(Code.Push_r64, s));
        // Planted bug (DbtOptions.PlantedScratchInPerCpuCell): the scratch also parked in a per-CPU cell.
        var cell = Emitter.Gs(e.PerCpu.JumpTablePtr + 16);
        if (e.Options.PlantedScratchInPerCpuCell) e.Add(Instruction.Create(Code.Mov_rm64_r64, cell, s));
        Protect(e);
        Index(e, s, reg);
        Probe(e, reg, s, e.Translator.Cache.Level2.RegisterEntry(reg));
        // tx is read only after the hit test (above), like every form.
        e.Add(Instruction.Create(Code.Push_rm64, new MemoryOperand(s, 8)));
        e.Add(Instruction.Create(Code.Mov_r64_rm64, s, new MemoryOperand(Register.RSP, 16)));
        // pop's destination address is computed with RSP already incremented: the saved S's slot.
        e.Add(Instruction.Create(Code.Pop_rm64, new MemoryOperand(Register.RSP, 8)));
        if (e.Options.PlantedScratchInPerCpuCell) e.Add(Instruction.Create(Code.Mov_r64_rm64, s, cell));
        e.Add(Instruction.Create(Code.Popfq));
        e.Add(Instruction.Create(Code.Retnq));
    }

    /// <summary>
    /// The memory form for the operand of n (jmp/call m64); wordsPushed: words the rule pushed before
    /// (a call's return address).
    /// </summary>
    public static void EmitMemory(Emitter e, in Instruction n, int wordsPushed)
    {
        e.Add(Instruction.Create(Code.Push_r64, Register.RAX));
        Protect(e);
        // The operand may use RAX or RBX: both are still native here. Two more words (RAX, flags) to skip.
        e.Add(IndirectRule.TargetLoad(n, wordsPushed + 2));
        e.Add(Instruction.Create(Code.Push_r64, Register.RBX));
        Index(e, Register.RBX, Register.RAX);
        Probe(e, Register.RAX, Register.RBX, e.Translator.Cache.Level2.MemoryEntry);
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RBX, new MemoryOperand(Register.RBX, 8)));
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RAX, new MemoryOperand(Register.RSP, 16)));
        e.Add(Instruction.Create(Code.Mov_rm64_r64, new MemoryOperand(Register.RSP, 16), Register.RBX));
        e.Add(Instruction.Create(Code.Pop_r64, Register.RBX));
        e.Add(Instruction.Create(Code.Popfq));
        e.Add(Instruction.Create(Code.Retnq));
    }

    /// <summary>The stack form, for a target already on top of the stack; ret pops popBytes more.</summary>
    public static void EmitStack(Emitter e, ushort popBytes, ushort releaseBytes = 0)
    {
        Protect(e);
        if (releaseBytes != 0)
        {
            // [flags, ret, n released bytes] -> [flags, ret] n bytes up, interrupts off (a pop's
            // address is computed with RSP already incremented); lea keeps the flags.
            e.Add(Instruction.Create(Code.Push_rm64, new MemoryOperand(Register.RSP, 8)));
            e.Add(Instruction.Create(Code.Pop_rm64, new MemoryOperand(Register.RSP, 8 + releaseBytes)));
            e.Add(Instruction.Create(Code.Push_rm64, new MemoryOperand(Register.RSP)));
            e.Add(Instruction.Create(Code.Pop_rm64, new MemoryOperand(Register.RSP, releaseBytes)));
            e.Add(Instruction.Create(Code.Lea_r64_m, Register.RSP, new MemoryOperand(Register.RSP, releaseBytes)));
        }
        e.Add(Instruction.Create(Code.Push_r64, Register.RAX));
        e.Add(Instruction.Create(Code.Push_r64, Register.RBX));
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RAX, new MemoryOperand(Register.RSP, 24)));
        Index(e, Register.RBX, Register.RAX);
        Probe(e, Register.RAX, Register.RBX, e.Translator.Cache.JumpTableL2);
        e.Add(Instruction.Create(Code.Mov_r64_rm64, Register.RAX, new MemoryOperand(Register.RBX, 8)));
        e.Add(Instruction.Create(Code.Mov_rm64_r64, new MemoryOperand(Register.RSP, 24), Register.RAX));
        e.Add(Instruction.Create(Code.Pop_r64, Register.RBX));
        e.Add(Instruction.Create(Code.Pop_r64, Register.RAX));
        e.Add(Instruction.Create(Code.Popfq));
        e.Add(popBytes == 0 ? Instruction.Create(Code.Retnq) : Instruction.Create(Code.Retnq_imm16, popBytes));
    }

    /// <summary>pushfq; cli: the guest's flags saved, interrupts off until the exit's popfq.</summary>
    private static void Protect(Emitter e)
    {
        e.Add(Instruction.Create(Code.Pushfq));
        if (!e.Options.PlantedLookupWithInterrupts) e.Add(Instruction.Create(Code.Cli));
        e.Clients?.Lookup(e, LookupPoint.Start);
    }

    /// <summary>entry = this CPU's jumptable + (target &amp; 0x3FF0), into the 64-bit register entry.</summary>
    private static void Index(Emitter e, Register entry, Register target)
    {
        var entry32 = entry - Register.RAX + Register.EAX;
        e.Add(Instruction.Create(Code.Mov_r32_rm32, entry32, target - Register.RAX + Register.EAX));
        e.Add(Instruction.Create(Code.And_rm32_imm32, entry32, (int)JumpTable.IndexMask));
        e.Add(Instruction.Create(Code.Add_r64_rm64, entry, Emitter.Gs(e.PerCpu.JumpTablePtr)));
    }

    /// <summary>The hit test: cmp target, [entry]; a miss jumps to level2.</summary>
    private static void Probe(Emitter e, Register target, Register entry, ulong level2)
    {
        var clients = e.Clients;
        e.Add(Instruction.Create(Code.Cmp_r64_rm64, target, new MemoryOperand(entry)));
        if (clients is null) e.BranchToCache(Emitter.Jcc(ConditionCode.ne), level2);
        else
        {
            int hit = e.BranchForward(Code.Je_rel32_64);
            clients.Lookup(e, LookupPoint.Level1Miss);
            e.BranchToCache(Emitter.Jmp, level2);
            e.Bind(hit);
            clients.Lookup(e, LookupPoint.Level1Hit);
        }
    }
}
