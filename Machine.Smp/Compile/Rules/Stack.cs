using System.Reflection.Emit;
using Harness.Smp.Cpu;
using Harness.Smp.Exec;

namespace Harness.Smp.Compile;

// 64-bit push and pop of registers and immediates, leave. Stack accesses are never scheduling
// points (Vcpu.Push64), so these are plain accesses here as in the handlers.
internal sealed unsafe partial class BlockEmitter
{
    private static void StackRules(Dictionary<nint, Rule> map)
    {
        On(map, &Stack.PushR, e => e.X->SizeLog == 3 && e.Push(() => e.LoadReg(e.X->R0, 3)));
        On(map, &Stack.PushI, e => e.X->SizeLog == 3 && e.Push(() => e.Ldc(e.X->Imm)));
        On(map, &Stack.PopR, e => e.X->SizeLog == 3 && e.Pop());
        On(map, &Stack.Leave, e => e.Leave());
    }

    /// <summary>The value is read before RSP moves (push rsp pushes the old value).</summary>
    private bool Push(Action value)
    {
        value(); St(a);
        PushLocal(a);
        return true;
    }

    private void PushLocal(LocalBuilder v)
    {
        LdGpr(Reg.Rsp); Ldc(8L); Op(OpCodes.Sub); St(ea);
        Write(3, v);
        StGpr(Reg.Rsp, () => Ld(ea));
    }

    private bool Pop()
    {
        LdGpr(Reg.Rsp); St(ea);
        Read(3, a);
        StGpr(Reg.Rsp, () => { Ld(ea); Ldc(8L); Op(OpCodes.Add); });
        StoreReg(X->R0, 3, a); // pop rsp: the popped value wins
        return true;
    }

    private bool Leave()
    {
        LdGpr(Reg.Rbp); St(ea);
        Read(3, a);
        StGpr(Reg.Rsp, () => { Ld(ea); Ldc(8L); Op(OpCodes.Add); });
        StGpr(Reg.Rbp, () => Ld(a));
        return true;
    }
}
