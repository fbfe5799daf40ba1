using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>mov movzx movsx movsxd lea xchg bswap cbw/cwde/cdqe cwd/cdq/cqo cmovcc setcc, nops.</summary>
internal static unsafe class Moves
{
    public static void Install()
    {
        OpTable.Add(Mnemonic.Mov, new FormMap()
            .On(Form.RR, &MovRR<S8>, &MovRR<S16>, &MovRR<S32>, &MovRR<S64>)
            .On(Form.RM, &MovRM<S8>, &MovRM<S16>, &MovRM<S32>, &MovRM<S64>)
            .On(Form.MR, &MovMR<S8>, &MovMR<S16>, &MovMR<S32>, &MovMR<S64>)
            .On(Form.RI, &MovRI<S8>, &MovRI<S16>, &MovRI<S32>, &MovRI<S64>)
            .On(Form.MI, &MovMI<S8>, &MovMI<S16>, &MovMI<S32>, &MovMI<S64>), check: &CheckMov);
        OpTable.Add(Mnemonic.Movzx, new FormMap().On(Form.RR, &ZxR).On(Form.RM, &ZxM), check: &SourceSize);
        OpTable.Add(Mnemonic.Movsx, new FormMap().On(Form.RR, &SxR).On(Form.RM, &SxM), check: &SourceSize);
        OpTable.Add(Mnemonic.Movsxd, new FormMap().On(Form.RR, &SxR).On(Form.RM, &SxM), check: &SourceSize);
        OpTable.Add(Mnemonic.Lea, new FormMap().On(Form.RM, null, &Lea<S16>, &Lea<S32>, &Lea<S64>), check: &CheckLea);
        OpTable.Add(Mnemonic.Xchg, new FormMap().On(Form.RR, &XchgRR).Always(Form.RM, &XchgM).Always(Form.MR, &XchgM));
        OpTable.Add(Mnemonic.Bswap, &Bswap);
        OpTable.Add(Mnemonic.Cbw, &Cbw);
        OpTable.Add(Mnemonic.Cwde, &Cwde);
        OpTable.Add(Mnemonic.Cdqe, &Cdqe);
        OpTable.Add(Mnemonic.Cwd, &Cwd);
        OpTable.Add(Mnemonic.Cdq, &Cdq);
        OpTable.Add(Mnemonic.Cqo, &Cqo);
        OpTable.Add(Mnemonic.Nop, &Nop);
        OpTable.Add(Mnemonic.Endbr64, &Nop);
        OpTable.Add(Mnemonic.Endbr32, &Nop);
        var cmov = new FormMap().On(Form.RR, &CmovRR).On(Form.RM, &CmovRM);
        var setcc = new FormMap().On(Form.R, &SetccR).On(Form.M, &SetccM);
        for (byte cc = 0; cc < 16; cc++)
        {
            OpTable.Add(Cmovcc[cc], cmov, cc);
            OpTable.Add(Setcc[cc], setcc, cc);
        }
    }

    // In condition-code order (the low nibble of the opcode): o no b ae e ne be a s ns p np l ge le g.
    internal static readonly Mnemonic[] Cmovcc =
    [
        Mnemonic.Cmovo, Mnemonic.Cmovno, Mnemonic.Cmovb, Mnemonic.Cmovae, Mnemonic.Cmove, Mnemonic.Cmovne, Mnemonic.Cmovbe, Mnemonic.Cmova,
        Mnemonic.Cmovs, Mnemonic.Cmovns, Mnemonic.Cmovp, Mnemonic.Cmovnp, Mnemonic.Cmovl, Mnemonic.Cmovge, Mnemonic.Cmovle, Mnemonic.Cmovg,
    ];

    internal static readonly Mnemonic[] Setcc =
    [
        Mnemonic.Seto, Mnemonic.Setno, Mnemonic.Setb, Mnemonic.Setae, Mnemonic.Sete, Mnemonic.Setne, Mnemonic.Setbe, Mnemonic.Seta,
        Mnemonic.Sets, Mnemonic.Setns, Mnemonic.Setp, Mnemonic.Setnp, Mnemonic.Setl, Mnemonic.Setge, Mnemonic.Setle, Mnemonic.Setg,
    ];

    // Moves to and from segment and control registers are system instructions.
    private static bool CheckMov(ref Insn x, in Instruction ins)
    {
        for (int i = 0; i < ins.OpCount; i++)
            if (ins.GetOpKind(i) == OpKind.Register && (ins.GetOpRegister(i).IsSegmentRegister() || ins.GetOpRegister(i).IsCR()))
                return SystemOps.BuildMovSpecial(ref x, ins);
        return true;
    }

    private static void MovRR<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, Z.Get(c.S, x.R1));
    private static void MovRI<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, x.Imm);
    private static void MovRM<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, Data.Load<Z>(c, c.Ea(ref x)));
    private static void MovMR<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Data.Store<Z>(c, c.Ea(ref x), Z.Get(c.S, x.R0));
    private static void MovMI<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Data.Store<Z>(c, c.Ea(ref x), x.Imm);

    private static bool SourceSize(ref Insn x, in Instruction ins)
    {
        int srcSize = ins.GetOpKind(1) == OpKind.Register ? ins.GetOpRegister(1).GetSize() : ins.MemorySize.GetSize();
        x.Size2 = (byte)OpTable.SizeLog(srcSize);
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

    private static bool CheckLea(ref Insn x, in Instruction ins)
    {
        x.MSeg = 0; // lea computes the offset: no segment base
        return true;
    }

    private static void Lea<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, c.Ea(ref x));

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

    private static void SetccR(Vcpu c, ref Insn x) => c.SetReg(x.R0, 0, c.Cond(x.Sub) ? 1UL : 0);
    private static void SetccM(Vcpu c, ref Insn x) => c.Store(c.Ea(ref x), 0, c.Cond(x.Sub) ? 1UL : 0);
}
