using System.Reflection.Emit;
using Harness.Smp.Decode;
using Iced.Intel;
using Label = System.Reflection.Emit.Label;

namespace Harness.Smp.Compile;

// mov (register, memory, immediate forms), movzx movsx movsxd, lea, nop, cmovcc, setcc.
internal sealed unsafe partial class BlockEmitter
{
    private static void MoveRules(Dictionary<nint, Rule> map)
    {
        foreach (var form in (Form[])[Form.RR, Form.RI, Form.RM, Form.MR, Form.MI])
            OnForm(map, Mnemonic.Mov, form, e => e.Mov(form));
        foreach (var m in (Mnemonic[])[Mnemonic.Movzx, Mnemonic.Movsx, Mnemonic.Movsxd])
            foreach (var form in (Form[])[Form.RR, Form.RM])
                OnForm(map, m, form, e => e.Extend(form, signed: m != Mnemonic.Movzx));
        OnForm(map, Mnemonic.Lea, Form.RM, e => e.Lea());
        OnRow(map, Mnemonic.Nop, _ => true);
        // cmovcc and setcc share one handler per form; the condition is the row's selector (x.Sub).
        OnForm(map, Exec.Moves.Cmovcc[0], Form.RR, e => e.Cmov(memory: false));
        OnForm(map, Exec.Moves.Cmovcc[0], Form.RM, e => e.Cmov(memory: true));
        OnForm(map, Exec.Moves.Setcc[0], Form.R, e => e.Setcc());
        OnForm(map, Exec.Moves.Setcc[0], Form.M, e => e.SetccMemory());
    }

    private bool Mov(Form form)
    {
        ref Insn x = ref *X;
        int log = x.SizeLog;
        switch (form)
        {
            case Form.RR: LoadReg(x.R1, log); St(a); StoreReg(x.R0, log, a); break;
            case Form.RI: Ldc(x.Imm); St(a); StoreReg(x.R0, log, a); break;
            case Form.RM: Ea(); Read(log, a); StoreReg(x.R0, log, a); break;
            case Form.MR: Ea(); LoadReg(x.R0, log); St(a); Write(log, a); break;
            default: Ea(); Ldc(x.Imm); St(a); Write(log, a); break;
        }
        return true;
    }

    private bool Extend(Form form, bool signed)
    {
        ref Insn x = ref *X;
        if (form == Form.RM) { Ea(); Read(x.Size2, a); } else { LoadReg(x.R1, x.Size2); St(a); }
        if (signed) { Ld(a); SignExtend(x.Size2); St(a); }
        StoreReg(x.R0, x.SizeLog, a);
        return true;
    }

    private bool Lea()
    {
        Ea();
        StoreReg(X->R0, X->SizeLog, ea);
        return true;
    }

    // cmov always writes its destination (a false condition still zero-extends a 32-bit one); the
    // memory operand is read whatever the condition.
    private bool Cmov(bool memory)
    {
        ref Insn x = ref *X;
        int log = x.SizeLog;
        if (memory) { Ea(); Read(log, b); } else { LoadReg(x.R1, log); St(b); }
        LoadReg(x.R0, log); St(a);
        Label keep = il.DefineLabel();
        Cond(x.Sub);
        il.Emit(OpCodes.Brfalse, keep);
        Ld(b); St(a);
        il.MarkLabel(keep);
        StoreReg(x.R0, log, a);
        return true;
    }

    private bool SetccMemory()
    {
        Ea();
        Cond(X->Sub); Op(OpCodes.Conv_U8); St(a);
        Write(0, a);
        return true;
    }

    private bool Setcc()
    {
        StoreReg(X->R0, 0, () => { Cond(X->Sub); Op(OpCodes.Conv_U8); });
        return true;
    }
}
