using Harness.Dbt.Dispatch;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.CodeCache;

/// <summary>Shared code in the stub page, assembled once with Iced's Assembler.</summary>
internal static class Stubs
{
    /// <summary>
    /// The level-2 jumptable probe. Entered by a jmp from an inline level-1 miss with interrupts
    /// cleared, stack [rbx, rax, flags, target (, return address)], RAX = target. A hit moves its entry
    /// to the front of the group, replaces the target slot with tx, restores RBX, RAX and the flags
    /// and "ret"s to tx, which pops the slot (the stack is then exactly the native branch's). A miss
    /// restores RBX and RAX and enters the dispatcher with [flags, target]. Scratch lives only on the
    /// current stack. Returns the code and the address of the miss vmcall.
    /// </summary>
    public static (byte[] Code, ulong MissVmcall) JumpTableLevel2(ulong at, PerCpu perCpu)
    {
        var a = new Assembler(64);
        var hit0 = a.CreateLabel();
        var hits = new[] { hit0, a.CreateLabel(), a.CreateLabel(), a.CreateLabel() };
        var miss = a.CreateLabel();
        int g = JumpTable.L2Offset;
        a.mov(rbx, rax);
        a.shr(rbx, 12);
        a.xor(rbx, rax);
        a.and(ebx, (int)JumpTable.IndexMask);
        a.add(rbx, __qword_ptr.gs[(ulong)perCpu.JumpTablePtr]);
        for (int k = 0; k < JumpTable.Probe; k++)
        {
            a.cmp(rax, __qword_ptr[rbx + (g + k * JumpTable.EntryBytes)]);
            a.je(hits[k]);
        }
        a.pop(rbx);
        a.pop(rax);
        a.Label(ref miss);
        a.vmcall();
        for (int k = 1; k < JumpTable.Probe; k++)
        {
            a.Label(ref hits[k]);
            int ek = g + k * JumpTable.EntryBytes;
            // Swap entry k with entry 0 through the stack (no register is free).
            a.push(__qword_ptr[rbx + g]);
            a.push(__qword_ptr[rbx + (g + 8)]);
            a.push(__qword_ptr[rbx + ek]);
            a.push(__qword_ptr[rbx + (ek + 8)]);
            a.pop(__qword_ptr[rbx + (g + 8)]);
            a.pop(__qword_ptr[rbx + g]);
            a.pop(__qword_ptr[rbx + (ek + 8)]);
            a.pop(__qword_ptr[rbx + ek]);
            a.jmp(hit0);
        }
        a.Label(ref hit0);
        a.mov(rax, __qword_ptr[rbx + (g + 8)]);
        a.mov(__qword_ptr[rsp + 24], rax);
        a.pop(rbx);
        a.pop(rax);
        a.popfq();
        a.ret();
        var w = new Writer();
        var r = a.Assemble(w, at, BlockEncoderOptions.ReturnNewInstructionOffsets);
        ulong missAt = r.GetLabelRIP(miss);
        return (w.Bytes.ToArray(), missAt);
    }

    internal sealed class Writer : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }
}
