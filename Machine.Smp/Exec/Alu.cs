using System.Runtime.CompilerServices;
using Harness.Machine.Decode;
using Iced.Intel;

namespace Harness.Machine.Exec;

/// <summary>add or adc sbb and sub xor cmp test; inc dec neg not. Flags are lazy.</summary>
internal static unsafe class Alu
{
    // Sub-operation numbers follow the opcode's /r field (00-38 group), test after them.
    public const byte Add = 0, Or = 1, Adc = 2, Sbb = 3, And = 4, SubOp = 5, Xor = 6, Cmp = 7, Test = 8;
    public const byte Inc = 0, Dec = 1, Neg = 2, Not = 3;

    public static void Install()
    {
        OpTable.Add(Mnemonic.Add, &Build2, Add);
        OpTable.Add(Mnemonic.Or, &Build2, Or);
        OpTable.Add(Mnemonic.Adc, &Build2, Adc);
        OpTable.Add(Mnemonic.Sbb, &Build2, Sbb);
        OpTable.Add(Mnemonic.And, &Build2, And);
        OpTable.Add(Mnemonic.Sub, &Build2, SubOp);
        OpTable.Add(Mnemonic.Xor, &Build2, Xor);
        OpTable.Add(Mnemonic.Cmp, &Build2, Cmp);
        OpTable.Add(Mnemonic.Test, &Build2, Test);
        OpTable.Add(Mnemonic.Inc, &Build1, Inc);
        OpTable.Add(Mnemonic.Dec, &Build1, Dec);
        OpTable.Add(Mnemonic.Neg, &Build1, Neg);
        OpTable.Add(Mnemonic.Not, &Build1, Not);
    }

    private static bool Build2(ref Insn x, in Instruction ins)
    {
        var form = OpTable.FormOf(x, ins);
        if (x.Has(InsnFlags.Lock) && form is not (Form.MR or Form.MI)) return false;
        x.Exec = form switch
        {
            Form.RR => &RR,
            Form.RM => &RM,
            Form.MR => x.Has(InsnFlags.Lock) ? &LockedMR : &MR,
            Form.RI => &RI,
            Form.MI => x.Has(InsnFlags.Lock) ? &LockedMI : &MI,
            _ => null,
        };
        if (x.Exec == null) return false;
        // xor r,r and sub r,r are the idiomatic zeroing forms: handled by the generic path (result 0).
        return true;
    }

    private static bool Build1(ref Insn x, in Instruction ins)
    {
        var form = OpTable.FormOf(x, ins);
        if (x.Has(InsnFlags.Lock) && form != Form.M) return false;
        x.Exec = form == Form.R ? &Unary_R : x.Has(InsnFlags.Lock) ? &LockedUnary_M : &Unary_M;
        return true;
    }

    /// <summary>Computes the result and records the lazy flags. Returns the result (unmasked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Compute(Vcpu c, int op, int log, ulong a, ulong b)
    {
        ulong r;
        switch (op)
        {
            case Add: r = a + b; c.SetLazy(FlagOp.Add, log, r, a, b); return r;
            case Or: r = a | b; c.SetLazy(FlagOp.Logic, log, r, a, b); return r;
            case Adc:
            {
                ulong cf = c.CF ? 1UL : 0;
                r = a + b + cf;
                c.SetLazy(FlagOp.Adc, log, r, a, b);
                c.S->LazyCfIn = cf;
                return r;
            }
            case Sbb:
            {
                ulong cf = c.CF ? 1UL : 0;
                r = a - b - cf;
                c.SetLazy(FlagOp.Sbb, log, r, a, b);
                c.S->LazyCfIn = cf;
                return r;
            }
            case And: case Test: r = a & b; c.SetLazy(FlagOp.Logic, log, r, a, b); return r;
            case SubOp: case Cmp: r = a - b; c.SetLazy(FlagOp.Sub, log, r, a, b); return r;
            default: r = a ^ b; c.SetLazy(FlagOp.Logic, log, r, a, b); return r;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Writes(int op) => op != Cmp && op != Test;

    private static void RR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong r = Compute(c, x.Sub, log, c.GetReg(x.R0, log), c.GetReg(x.R1, log));
        if (Writes(x.Sub)) c.SetReg(x.R0, log, r);
    }

    private static void RI(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong r = Compute(c, x.Sub, log, c.GetReg(x.R0, log), x.Imm);
        if (Writes(x.Sub)) c.SetReg(x.R0, log, r);
    }

    private static void RM(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong b = c.Load(c.Ea(ref x), log);
        ulong r = Compute(c, x.Sub, log, c.GetReg(x.R0, log), b);
        if (Writes(x.Sub)) c.SetReg(x.R0, log, r);
    }

    private static void MR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong ea = c.Ea(ref x);
        ulong a = c.Load(ea, log);
        ulong r = Compute(c, x.Sub, log, a, c.GetReg(x.R0, log));
        if (Writes(x.Sub)) c.Store(ea, log, r);
    }

    private static void MI(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong ea = c.Ea(ref x);
        ulong a = c.Load(ea, log);
        ulong r = Compute(c, x.Sub, log, a, x.Imm);
        if (Writes(x.Sub)) c.Store(ea, log, r);
    }

    private static ulong NewMR(Vcpu c, ref Insn x, ulong a, ulong _) => Compute(c, x.Sub, x.SizeLog, a, c.GetReg(x.R0, x.SizeLog));
    private static ulong NewMI(Vcpu c, ref Insn x, ulong a, ulong _) => Compute(c, x.Sub, x.SizeLog, a, x.Imm);
    private static void LockedMR(Vcpu c, ref Insn x) => Atomics.Rmw(c, ref x, c.Ea(ref x), &NewMR, 0);
    private static void LockedMI(Vcpu c, ref Insn x) => Atomics.Rmw(c, ref x, c.Ea(ref x), &NewMI, 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Unary(Vcpu c, int op, int log, ulong a)
    {
        switch (op)
        {
            case Inc:
            {
                ulong cf = c.CF ? 1UL : 0;
                ulong r = a + 1;
                c.SetLazy(FlagOp.Inc, log, r, a, 1);
                c.S->LazyCfIn = cf;
                return r;
            }
            case Dec:
            {
                ulong cf = c.CF ? 1UL : 0;
                ulong r = a - 1;
                c.SetLazy(FlagOp.Dec, log, r, a, 1);
                c.S->LazyCfIn = cf;
                return r;
            }
            case Neg:
            {
                ulong r = 0 - a;
                c.SetLazy(FlagOp.Sub, log, r, 0, a);
                return r;
            }
            default: return ~a; // not: no flags
        }
    }

    private static void Unary_R(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, Unary(c, x.Sub, x.SizeLog, c.GetReg(x.R0, x.SizeLog)));

    private static void Unary_M(Vcpu c, ref Insn x)
    {
        ulong ea = c.Ea(ref x);
        c.Store(ea, x.SizeLog, Unary(c, x.Sub, x.SizeLog, c.Load(ea, x.SizeLog)));
    }

    private static ulong NewUnary(Vcpu c, ref Insn x, ulong a, ulong _) => Unary(c, x.Sub, x.SizeLog, a);
    private static void LockedUnary_M(Vcpu c, ref Insn x) => Atomics.Rmw(c, ref x, c.Ea(ref x), &NewUnary, 0);
}
