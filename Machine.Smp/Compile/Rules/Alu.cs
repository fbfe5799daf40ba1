using System.Reflection.Emit;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Compile;

// add or adc sbb and sub xor cmp test (every form and size without lock), inc dec neg not
// (register and memory). Locked forms keep their handlers (Exec/Atomics.cs).
internal sealed unsafe partial class BlockEmitter
{
    private static void AluRules(Dictionary<nint, Rule> map)
    {
        (Mnemonic M, FlagOp Flags, OpCode Op, bool Writes)[] binary =
        [
            (Mnemonic.Add, FlagOp.Add, OpCodes.Add, true), (Mnemonic.Sub, FlagOp.Sub, OpCodes.Sub, true),
            (Mnemonic.Cmp, FlagOp.Sub, OpCodes.Sub, false), (Mnemonic.And, FlagOp.Logic, OpCodes.And, true),
            (Mnemonic.Test, FlagOp.Logic, OpCodes.And, false), (Mnemonic.Or, FlagOp.Logic, OpCodes.Or, true),
            (Mnemonic.Xor, FlagOp.Logic, OpCodes.Xor, true),
        ];
        foreach (var (m, flags, op, writes) in binary)
            foreach (var form in (Form[])[Form.RR, Form.RI, Form.RM, Form.MR, Form.MI])
                OnForm(map, m, form, e => e.Binary(form, flags, op, writes));
        foreach (var form in (Form[])[Form.RR, Form.RI, Form.RM, Form.MR, Form.MI])
        {
            OnForm(map, Mnemonic.Adc, form, e => e.Binary(form, FlagOp.Adc, OpCodes.Add, writes: true));
            OnForm(map, Mnemonic.Sbb, form, e => e.Binary(form, FlagOp.Sbb, OpCodes.Sub, writes: true));
        }
        foreach (var form in (Form[])[Form.R, Form.M])
        {
            OnForm(map, Mnemonic.Inc, form, e => e.IncDec(form, FlagOp.Inc, OpCodes.Add));
            OnForm(map, Mnemonic.Dec, form, e => e.IncDec(form, FlagOp.Dec, OpCodes.Sub));
            OnForm(map, Mnemonic.Neg, form, e => e.NegNot(form, neg: true));
            OnForm(map, Mnemonic.Not, form, e => e.NegNot(form, neg: false));
        }
    }

    private bool Binary(Form form, FlagOp flags, OpCode op, bool writes)
    {
        ref Insn x = ref *X;
        int log = x.SizeLog;
        switch (form)
        {
            case Form.RR: LoadReg(x.R0, log); St(a); LoadReg(x.R1, log); St(b); break;
            case Form.RI: LoadReg(x.R0, log); St(a); Ldc(x.Imm); St(b); break;
            case Form.RM: Ea(); Read(log, b); LoadReg(x.R0, log); St(a); break;
            case Form.MR: Ea(); Read(log, a); LoadReg(x.R0, log); St(b); break;
            default: Ea(); Read(log, a); Ldc(x.Imm); St(b); break;
        }
        bool carry = flags is FlagOp.Adc or FlagOp.Sbb;
        if (carry) { CarryFlag(); Op(OpCodes.Conv_U8); St(fCfNext); } // adc/sbb: the carry the previous flags leave, read first
        Ld(a); Ld(b); Op(op);
        if (carry) { Ld(fCfNext); Op(op); }
        St(r);
        if (writes)
        {
            if (form is Form.MR or Form.MI) Write(log, r);
            else StoreReg(x.R0, log, r);
        }
        // After the store: a fault there leaves the previous instruction's flags, as the CPU does.
        if (carry) SetFlags(flags, log, () => Ld(r), () => Ld(a), () => Ld(b), () => Ld(fCfNext));
        else SetFlags(flags, log, () => Ld(r), () => Ld(a), () => Ld(b));
        return true;
    }

    private bool IncDec(Form form, FlagOp flags, OpCode op)
    {
        int log = X->SizeLog;
        if (form == Form.M) { Ea(); Read(log, a); } else { LoadReg(X->R0, log); St(a); }
        Ld(a); Ldc(1L); Op(op); St(r);
        // inc and dec keep CF: the record carries the current one in (read before anything changes it).
        CarryFlag(); Op(OpCodes.Conv_U8); St(b);
        if (form == Form.M) Write(log, r); else StoreReg(X->R0, log, r);
        SetFlags(flags, log, () => Ld(r), () => Ld(a), () => Ldc(1L), () => Ld(b));
        return true;
    }

    private bool NegNot(Form form, bool neg)
    {
        int log = X->SizeLog;
        if (form == Form.M) { Ea(); Read(log, a); } else { LoadReg(X->R0, log); St(a); }
        if (neg) { Ldc(0L); Ld(a); Op(OpCodes.Sub); } else { Ld(a); Op(OpCodes.Not); }
        St(r);
        if (form == Form.M) Write(log, r); else StoreReg(X->R0, log, r);
        if (neg) SetFlags(FlagOp.Sub, log, () => Ld(r), () => Ldc(0L), () => Ld(a));
        return true;
    }
}
