using System.Reflection;
using System.Reflection.Emit;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;
using Label = System.Reflection.Emit.Label;

namespace Harness.Smp.Compile;

// shl/sal shr sar of a register, by an immediate (a constant count: a zero count writes the
// register and leaves the flags, as in Exec/Shifts.cs) or by CL (the zero test at run time; the
// flag record afterwards is the run-time one). Memory operands, rotates and double shifts keep
// their handlers.
internal sealed unsafe partial class BlockEmitter
{
    private static readonly MethodInfo MathMinInt = typeof(Math).GetMethod(nameof(Math.Min), [typeof(int), typeof(int)])!;

    private static void ShiftRules(Dictionary<nint, Rule> map)
    {
        OnForm(map, Mnemonic.Shl, Form.RI, e => e.ShiftByImm(FlagOp.Shl));
        OnForm(map, Mnemonic.Sal, Form.RI, e => e.ShiftByImm(FlagOp.Shl));
        OnForm(map, Mnemonic.Shr, Form.RI, e => e.ShiftByImm(FlagOp.Shr));
        OnForm(map, Mnemonic.Sar, Form.RI, e => e.ShiftByImm(FlagOp.Sar));
        OnForm(map, Mnemonic.Shl, Form.RR, e => e.ShiftByCl(FlagOp.Shl));
        OnForm(map, Mnemonic.Sal, Form.RR, e => e.ShiftByCl(FlagOp.Shl));
        OnForm(map, Mnemonic.Shr, Form.RR, e => e.ShiftByCl(FlagOp.Shr));
        OnForm(map, Mnemonic.Sar, Form.RR, e => e.ShiftByCl(FlagOp.Sar));
    }

    private bool ShiftByCl(FlagOp kind)
    {
        ref Insn x = ref *X;
        int log = x.SizeLog, bits = 8 << log;
        LoadReg(x.R0, log); St(a);
        LdGpr(Reg.Rcx); Op(OpCodes.Conv_U4); LdcI4(log == 3 ? 0x3F : 0x1F); Op(OpCodes.And); Op(OpCodes.Conv_U8); St(b);
        Describe(); // a zero count keeps the record as it is
        Label zero = il.DefineLabel(), done = il.DefineLabel();
        Ld(a); St(r);
        Ld(b); il.Emit(OpCodes.Brfalse, zero);
        Ld(a);
        switch (kind)
        {
            case FlagOp.Shl: Ld(b); Op(OpCodes.Conv_I4); Op(OpCodes.Shl); Mask(log); break;
            case FlagOp.Shr: Ld(b); Op(OpCodes.Conv_I4); Op(OpCodes.Shr_Un); break;
            default:
                SignExtend(log);
                Ld(b); Op(OpCodes.Conv_I4);
                if (log < 2) { LdcI4(bits - 1); il.Emit(OpCodes.Call, MathMinInt); }
                Op(OpCodes.Shr); Mask(log);
                break;
        }
        St(r);
        LdcI4((int)kind); St(fOp);
        LdcI4(log); St(fLog);
        Ld(r); St(fRes);
        Ld(a); St(fS1);
        Ld(b); St(fS2);
        il.MarkLabel(zero);
        pending = null;
        StoreReg(x.R0, log, r);
        return true;
    }

    private bool ShiftByImm(FlagOp kind)
    {
        ref Insn x = ref *X;
        int log = x.SizeLog, bits = 8 << log;
        int n = (int)x.Imm & (log == 3 ? 0x3F : 0x1F);
        LoadReg(x.R0, log); St(a);
        if (n == 0) { StoreReg(x.R0, log, a); return true; }
        Ld(a);
        switch (kind)
        {
            case FlagOp.Shl: LdcI4(n); Op(OpCodes.Shl); Mask(log); break;
            case FlagOp.Shr: LdcI4(n); Op(OpCodes.Shr_Un); break;
            default: SignExtend(log); LdcI4(Math.Min(n, bits - 1)); Op(OpCodes.Shr); Mask(log); break;
        }
        St(r);
        StoreReg(x.R0, log, r);
        SetFlags(kind, log, () => Ld(r), () => Ld(a), () => Ldc((long)n));
        return true;
    }
}
