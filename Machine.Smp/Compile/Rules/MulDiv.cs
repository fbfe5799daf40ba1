using System.Reflection;
using System.Reflection.Emit;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Compile;

// Two- and three-operand imul: the operands as constants, the product and its eager flags by the
// interpreter's own TruncMul (one direct call, no dispatch). mul, div and the one-operand forms keep their handlers.
internal sealed unsafe partial class BlockEmitter
{
    private static readonly MethodInfo MTruncMul = typeof(Exec.MulDiv).GetMethod(nameof(Exec.MulDiv.TruncMul), BindingFlags.Static | BindingFlags.NonPublic)
        ?? throw new MissingMethodException(nameof(Exec.MulDiv), nameof(Exec.MulDiv.TruncMul));

    private static void MulRules(Dictionary<nint, Rule> map)
    {
        foreach (var form in (Form[])[Form.RR, Form.RM, Form.RI, Form.MI])
            OnForm(map, Mnemonic.Imul, form, e => e.Imul(form));
    }

    private bool Imul(Form form)
    {
        ref Insn x = ref *X;
        int log = x.SizeLog;
        switch (form)
        {
            case Form.RR: LoadReg(x.R0, log); St(a); LoadReg(x.R1, log); St(b); break;
            case Form.RM: Ea(); Read(log, b); LoadReg(x.R0, log); St(a); break;
            case Form.RI: LoadReg(x.R1, log); St(a); Ldc(x.Imm); St(b); break;
            default: Ea(); Read(log, a); Ldc(x.Imm); St(b); break;
        }
        Spill(); // TruncMul sets every arithmetic flag in the state
        LdCpu(); LdcI4(log); Ld(a); Ld(b); il.Emit(OpCodes.Call, MTruncMul); St(r);
        StoreReg(x.R0, log, r);
        LoadFlags();
        return true;
    }
}
