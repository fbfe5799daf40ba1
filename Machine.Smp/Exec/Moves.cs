using Harness.Machine.Cpu;
using Harness.Machine.Decode;
using Iced.Intel;

namespace Harness.Machine.Exec;

/// <summary>mov movzx movsx movsxd lea xchg bswap cbw/cwde/cdqe cwd/cdq/cqo cmovcc setcc, nops.</summary>
internal static unsafe class Moves
{
    public static void Install()
    {
        OpTable.Add(Mnemonic.Mov, &BuildMov);
        OpTable.Add(Mnemonic.Movzx, &BuildExtend, 0);
        OpTable.Add(Mnemonic.Movsx, &BuildExtend, 1);
        OpTable.Add(Mnemonic.Movsxd, &BuildExtend, 1);
        OpTable.Add(Mnemonic.Lea, &BuildLea);
        OpTable.Add(Mnemonic.Xchg, &BuildXchg);
        OpTable.Add(Mnemonic.Bswap, &BuildSimple);
        OpTable.Add(Mnemonic.Cbw, &BuildSimple);
        OpTable.Add(Mnemonic.Cwde, &BuildSimple);
        OpTable.Add(Mnemonic.Cdqe, &BuildSimple);
        OpTable.Add(Mnemonic.Cwd, &BuildSimple);
        OpTable.Add(Mnemonic.Cdq, &BuildSimple);
        OpTable.Add(Mnemonic.Cqo, &BuildSimple);
        OpTable.Add(Mnemonic.Nop, &BuildSimple);
        OpTable.Add(Mnemonic.Endbr64, &BuildSimple);
        OpTable.Add(Mnemonic.Endbr32, &BuildSimple);
        foreach (var m in new[] { Mnemonic.Cmovo, Mnemonic.Cmovno, Mnemonic.Cmovb, Mnemonic.Cmovae, Mnemonic.Cmove, Mnemonic.Cmovne,
                     Mnemonic.Cmovbe, Mnemonic.Cmova, Mnemonic.Cmovs, Mnemonic.Cmovns, Mnemonic.Cmovp, Mnemonic.Cmovnp,
                     Mnemonic.Cmovl, Mnemonic.Cmovge, Mnemonic.Cmovle, Mnemonic.Cmovg })
            OpTable.Add(m, &BuildCmov);
        foreach (var m in new[] { Mnemonic.Seto, Mnemonic.Setno, Mnemonic.Setb, Mnemonic.Setae, Mnemonic.Sete, Mnemonic.Setne,
                     Mnemonic.Setbe, Mnemonic.Seta, Mnemonic.Sets, Mnemonic.Setns, Mnemonic.Setp, Mnemonic.Setnp,
                     Mnemonic.Setl, Mnemonic.Setge, Mnemonic.Setle, Mnemonic.Setg })
            OpTable.Add(m, &BuildSetcc);
    }

    /// <summary>Condition code 0..15 in opcode order (o no b ae e ne be a s ns p np l ge le g).</summary>
    public static byte CondOf(in Instruction ins) => (byte)(ins.ConditionCode - ConditionCode.o);

    private static bool BuildMov(ref Insn x, in Instruction ins)
    {
        // Moves to and from segment and control registers are system instructions.
        for (int i = 0; i < ins.OpCount; i++)
            if (ins.GetOpKind(i) == OpKind.Register && (ins.GetOpRegister(i).IsSegmentRegister() || ins.GetOpRegister(i).IsCR()))
                return SystemOps.BuildMovSpecial(ref x, ins);
        x.Exec = OpTable.FormOf(x, ins) switch
        {
            Form.RR => &MovRR,
            Form.RM => &MovRM,
            Form.MR => &MovMR,
            Form.RI => &MovRI,
            Form.MI => &MovMI,
            _ => null,
        };
        return x.Exec != null;
    }

    private static void MovRR(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, c.GetReg(x.R1, x.SizeLog));
    private static void MovRM(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, c.Load(c.Ea(ref x), x.SizeLog));
    private static void MovMR(Vcpu c, ref Insn x) => c.Store(c.Ea(ref x), x.SizeLog, c.GetReg(x.R0, x.SizeLog));
    private static void MovRI(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, x.Imm);
    private static void MovMI(Vcpu c, ref Insn x) => c.Store(c.Ea(ref x), x.SizeLog, x.Imm);

    private static bool BuildExtend(ref Insn x, in Instruction ins)
    {
        int srcSize = ins.GetOpKind(1) == OpKind.Register ? ins.GetOpRegister(1).GetSize() : ins.MemorySize.GetSize();
        x.Size2 = (byte)OpTable.SizeLog(srcSize);
        bool signed = x.Sub == 1;
        x.Exec = (ins.GetOpKind(1) == OpKind.Memory, signed) switch
        {
            (false, false) => &ZxR,
            (true, false) => &ZxM,
            (false, true) => &SxR,
            (true, true) => &SxM,
        };
        return true;
    }

    private static ulong SignExtend(ulong v, int log)
    {
        int sh = 64 - (8 << log);
        return (ulong)((long)(v << sh) >> sh);
    }

    private static void ZxR(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, c.GetReg(x.R1, x.Size2));
    private static void ZxM(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, c.Load(c.Ea(ref x), x.Size2));
    private static void SxR(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, SignExtend(c.GetReg(x.R1, x.Size2), x.Size2));
    private static void SxM(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, SignExtend(c.Load(c.Ea(ref x), x.Size2), x.Size2));

    private static bool BuildLea(ref Insn x, in Instruction ins)
    {
        x.MSeg = 0; // lea computes the offset: no segment base
        x.Exec = &Lea;
        return true;
    }

    private static void Lea(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, c.Ea(ref x));

    private static bool BuildXchg(ref Insn x, in Instruction ins)
    {
        x.Exec = OpTable.FormOf(x, ins) switch
        {
            Form.RR => &XchgRR,
            Form.RM or Form.MR => &XchgM,
            _ => null,
        };
        return x.Exec != null;
    }

    private static void XchgRR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong a = c.GetReg(x.R0, log), b = c.GetReg(x.R1, log);
        c.SetReg(x.R0, log, b);
        c.SetReg(x.R1, log, a);
    }

    private static ulong XchgNew(Vcpu c, ref Insn x, ulong old, ulong _) => c.GetReg(x.R0, x.SizeLog);

    // xchg with memory is always locked.
    private static void XchgM(Vcpu c, ref Insn x)
    {
        ulong old = Atomics.Rmw(c, ref x, c.Ea(ref x), &XchgNew, 0);
        c.SetReg(x.R0, x.SizeLog, old);
    }

    private static bool BuildSimple(ref Insn x, in Instruction ins)
    {
        x.Exec = ins.Mnemonic switch
        {
            Mnemonic.Bswap => &Bswap,
            Mnemonic.Cbw => &Cbw,
            Mnemonic.Cwde => &Cwde,
            Mnemonic.Cdqe => &Cdqe,
            Mnemonic.Cwd => &Cwd,
            Mnemonic.Cdq => &Cdq,
            Mnemonic.Cqo => &Cqo,
            _ => &Nop,
        };
        return true;
    }

    internal static void Nop(Vcpu c, ref Insn x) { }

    private static void Bswap(Vcpu c, ref Insn x)
    {
        if (x.SizeLog == 3) c.SetReg(x.R0, 3, System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(c.GetReg(x.R0, 3)));
        else if (x.SizeLog == 2) c.SetReg(x.R0, 2, System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)c.GetReg(x.R0, 2)));
        else c.SetReg(x.R0, 1, 0); // bswap r16 is undefined; our fixed choice: the register's low word becomes 0
    }

    private static void Cbw(Vcpu c, ref Insn x) => c.SetReg(Reg.Rax, 1, (ulong)(sbyte)c.S->Gpr[Reg.Rax]);
    private static void Cwde(Vcpu c, ref Insn x) => c.SetReg(Reg.Rax, 2, (ulong)(short)c.S->Gpr[Reg.Rax]);
    private static void Cdqe(Vcpu c, ref Insn x) => c.S->Gpr[Reg.Rax] = (ulong)(int)c.S->Gpr[Reg.Rax];
    private static void Cwd(Vcpu c, ref Insn x) => c.SetReg(Reg.Rdx, 1, (short)c.S->Gpr[Reg.Rax] < 0 ? 0xFFFFUL : 0);
    private static void Cdq(Vcpu c, ref Insn x) => c.SetReg(Reg.Rdx, 2, (int)c.S->Gpr[Reg.Rax] < 0 ? 0xFFFF_FFFFUL : 0);
    private static void Cqo(Vcpu c, ref Insn x) => c.S->Gpr[Reg.Rdx] = (long)c.S->Gpr[Reg.Rax] < 0 ? ulong.MaxValue : 0;

    private static bool BuildCmov(ref Insn x, in Instruction ins)
    {
        x.Sub = CondOf(ins);
        x.Exec = OpTable.FormOf(x, ins) == Form.RR ? &CmovRR : &CmovRM;
        return true;
    }

    // cmov always writes its destination: a false condition with a 32-bit operand still clears the upper half.
    private static void CmovRR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        c.SetReg(x.R0, log, c.Cond(x.Sub) ? c.GetReg(x.R1, log) : c.GetReg(x.R0, log));
    }

    private static void CmovRM(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong v = c.Load(c.Ea(ref x), log); // the load happens (and may fault) whatever the condition
        c.SetReg(x.R0, log, c.Cond(x.Sub) ? v : c.GetReg(x.R0, log));
    }

    private static bool BuildSetcc(ref Insn x, in Instruction ins)
    {
        x.Sub = CondOf(ins);
        x.Exec = x.Has(InsnFlags.MemOperand) ? &SetccM : &SetccR;
        return true;
    }

    private static void SetccR(Vcpu c, ref Insn x) => c.SetReg(x.R0, 0, c.Cond(x.Sub) ? 1UL : 0);
    private static void SetccM(Vcpu c, ref Insn x) => c.Store(c.Ea(ref x), 0, c.Cond(x.Sub) ? 1UL : 0);
}
