using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>push pop leave. (pushfq/popfq live with the system instructions: they touch IF.)</summary>
internal static unsafe class Stack
{
    public static void Install()
    {
        OpTable.Add(Mnemonic.Push, &BuildPush);
        OpTable.Add(Mnemonic.Pop, &BuildPop);
        OpTable.Add(Mnemonic.Leave, &BuildLeave);
    }

    private static bool BuildPush(ref Insn x, in Instruction ins)
    {
        if (ins.GetOpKind(0) == OpKind.Register && ins.GetOpRegister(0).IsSegmentRegister()) return false;
        bool imm = ins.GetOpKind(0) is >= OpKind.Immediate8 and <= OpKind.Immediate32to64;
        if (x.Size != 8 && x.Size != 2) x.Size = 8; // immediates: the stack width
        if (imm) x.Size = (byte)(ins.StackPointerIncrement == -2 ? 2 : 8);
        x.SizeLog = (byte)OpTable.SizeLog(x.Size);
        x.Exec = imm ? &PushI : x.Has(InsnFlags.MemOperand) ? &PushM : &PushR;
        return true;
    }

    private static void PushSized(Vcpu c, int log, ulong v)
    {
        if (log == 3) { c.Push64(v); return; }
        ulong sp = c.S->Gpr[Reg.Rsp] - 2;
        c.Write16(sp, (ushort)v);
        c.S->Gpr[Reg.Rsp] = sp;
    }

    internal static void PushR(Vcpu c, ref Insn x) => PushSized(c, x.SizeLog, c.GetReg(x.R0, x.SizeLog));
    internal static void PushI(Vcpu c, ref Insn x) => PushSized(c, x.SizeLog, x.Imm);
    private static void PushM(Vcpu c, ref Insn x) => PushSized(c, x.SizeLog, c.Load(c.Ea(ref x), x.SizeLog));

    private static bool BuildPop(ref Insn x, in Instruction ins)
    {
        if (ins.GetOpKind(0) == OpKind.Register && ins.GetOpRegister(0).IsSegmentRegister()) return SystemOps.BuildMovSpecial(ref x, ins);
        x.Exec = x.Has(InsnFlags.MemOperand) ? &PopM : &PopR;
        return true;
    }

    private static ulong PopSized(Vcpu c, int log, out ulong newSp)
    {
        ulong sp = c.S->Gpr[Reg.Rsp];
        if (log == 3) { newSp = sp + 8; return c.Read64(sp); }
        newSp = sp + 2;
        return c.Read16(sp);
    }

    internal static void PopR(Vcpu c, ref Insn x)
    {
        ulong v = PopSized(c, x.SizeLog, out ulong sp);
        c.S->Gpr[Reg.Rsp] = sp;
        c.SetReg(x.R0, x.SizeLog, v); // pop rsp: the popped value wins
    }

    private static void PopM(Vcpu c, ref Insn x)
    {
        ulong oldSp = c.S->Gpr[Reg.Rsp];
        ulong v = PopSized(c, x.SizeLog, out ulong sp);
        // The destination address is computed with RSP already incremented.
        c.S->Gpr[Reg.Rsp] = sp;
        try { c.Store(c.Ea(ref x), x.SizeLog, v); }
        catch (GuestFault) { c.S->Gpr[Reg.Rsp] = oldSp; throw; }
    }

    private static bool BuildLeave(ref Insn x, in Instruction ins)
    {
        x.Exec = &Leave;
        return true;
    }

    internal static void Leave(Vcpu c, ref Insn x)
    {
        var s = c.S;
        ulong v = c.Read64(s->Gpr[Reg.Rbp]);
        s->Gpr[Reg.Rsp] = s->Gpr[Reg.Rbp] + 8;
        s->Gpr[Reg.Rbp] = v;
    }
}
