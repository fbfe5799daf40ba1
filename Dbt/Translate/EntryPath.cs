using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// The tx-nextpc-loc save on interrupt and exception entry (the paper's fix for an interrupt that
/// arrives between the dispatcher exit's popfq and its jmp [tx-nextpc-loc]). A shadow IDT gate leads
/// to a translation of the handler made in entry mode: the translator follows the native path from
/// the gate, tracking where the frame's redundant slot is relative to RSP (it is the word 24 bytes
/// below the saved RIP: docs/kernel-contract.md section 2), and translates the kernel's own write to
/// that slot as "copy gs:[tx-nextpc-loc] there" (push m64; pop m64: no register, no flags).
/// Until that write, every direct branch on the path is translated eagerly and branched to directly,
/// so no dispatcher entry (which would overwrite tx-nextpc-loc) can happen before the save. The
/// restore is part of the iretq rule.
///
/// The tracker understands push/pop (and pushfq/popfq), add/sub RSP with an immediate, and a mov of a
/// qword to [rsp + disp]; anything else that moves RSP, writes part of the slot, or leaves the path
/// (call, ret, indirect branch, iretq) before the slot is written makes the gate untranslatable, with
/// a message naming the instruction.
/// </summary>
internal static class EntryPath
{
    /// <summary>Handles e.Native in entry mode: true if it emitted it (the save), false if the normal rule should.</summary>
    public static bool Step(Emitter e, InstructionInfoFactory infos)
    {
        var n = e.Native;
        int d = e.SlotDelta!.Value;
        switch (n.Mnemonic)
        {
            case Mnemonic.Push:
            case Mnemonic.Pushfq:
                if (n.StackPointerIncrement != -8) throw Fail(n, "a push that is not 8 bytes");
                d += 8;
                if (d == 0)
                {
                    // This push writes the slot: push the saved tx-nextpc-loc instead.
                    e.Add(Save(e));
                    e.SlotDelta = null;
                    return true;
                }
                e.SlotDelta = d;
                return false;
            case Mnemonic.Pop:
            case Mnemonic.Popfq:
                if (n.StackPointerIncrement != 8) throw Fail(n, "a pop that is not 8 bytes");
                if (n.Op0Kind == OpKind.Register && n.Op0Register == Register.RSP) throw Fail(n, "RSP loaded from the stack");
                e.SlotDelta = d - 8;
                return false;
            case Mnemonic.Sub or Mnemonic.Add when n.Op0Kind == OpKind.Register && n.Op0Register == Register.RSP:
                if (n.Op1Kind is not (OpKind.Immediate8to64 or OpKind.Immediate32to64 or OpKind.Immediate8 or OpKind.Immediate32))
                    throw Fail(n, "RSP changed by a non-constant amount");
                long imm = (long)n.GetImmediate(1);
                e.SlotDelta = checked((int)(n.Mnemonic == Mnemonic.Sub ? d + imm : d - imm));
                return false;
        }
        var info = infos.GetInfo(n);
        foreach (var m in info.GetUsedMemory())
        {
            if (m.Access is not (OpAccess.Write or OpAccess.CondWrite or OpAccess.ReadWrite or OpAccess.ReadCondWrite)) continue;
            if (m.Base != Register.RSP || m.Index != Register.None) continue;
            long disp = (long)m.Displacement;
            int size = m.MemorySize.GetSize();
            if (disp + size <= d || disp >= d + 8) continue;
            if (n.Mnemonic == Mnemonic.Mov && size == 8 && disp == d && n.Op0Kind == OpKind.Memory)
            {
                e.Add(Save(e));
                e.Add(Instruction.Create(Code.Pop_rm64, new MemoryOperand(Register.RSP, disp)));
                e.SlotDelta = null;
                return true;
            }
            throw Fail(n, "a write to part of the frame's redundant slot that is not a qword mov or push");
        }
        foreach (var r in info.GetUsedRegisters())
            if (r.Register == Register.RSP && r.Access is not (OpAccess.Read or OpAccess.CondRead or OpAccess.NoMemAccess))
                throw Fail(n, "RSP changed in a way the entry path cannot follow");
        return false;
    }

    /// <summary>push qword gs:[tx-nextpc-loc]</summary>
    private static Instruction Save(Emitter e) =>
        Instruction.Create(Code.Push_rm64, new MemoryOperand(Register.None, Register.None, 1, (long)e.PerCpu.TxNextPcLoc, 4, false, Register.GS));

    private static UnsupportedInstructionException Fail(in Instruction n, string what) =>
        new(n, $"interrupt entry path: {what} ('{n}') before the frame's redundant slot is written");
}
