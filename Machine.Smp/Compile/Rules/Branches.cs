using System.Reflection.Emit;
using Harness.Smp.Cpu;
using Harness.Smp.Exec;
using Label = System.Reflection.Emit.Label;

namespace Harness.Smp.Compile;

// jmp and call (relative and register), ret, jcc. A branch back to the block's own start loops
// inside the compiled code while no event is due (BlockEmitter.Epilogue).
internal sealed unsafe partial class BlockEmitter
{
    private static void BranchRules(Dictionary<nint, Rule> map)
    {
        On(map, &Branches.JmpRel, e => { e.EndBlock(); e.Leave(e.X->Imm); return true; });
        On(map, &Branches.JmpR, e => { e.LoadReg(e.X->R0, 3); e.St(e.target); e.EndBlock(); e.LeaveComputed(); return true; });
        On(map, &Branches.CallRel, e => e.Call(() => e.Ldc(e.X->Imm)));
        On(map, &Branches.CallR, e => e.Call(() => e.LoadReg(e.X->R0, 3)));
        On(map, &Branches.Ret, e => e.Ret());
        // Several conditions share a handler (the rest evaluate x.Sub): a rule per distinct handler.
        foreach (var m in Branches.ConditionalJumps) OnRow(map, m, e => e.Jcc());
    }

    private bool Call(Action callee)
    {
        callee(); St(b); // read before RSP moves (call *%rsp)
        Ldc(X->NextIp); St(a);
        PushLocal(a);
        Ld(b); St(target);
        EndBlock();
        LeaveComputed();
        return true;
    }

    private bool Ret()
    {
        LdGpr(Reg.Rsp); St(ea);
        Read(3, a);
        StGpr(Reg.Rsp, () => { Ld(ea); Ldc((long)(8 + X->Imm)); Op(OpCodes.Add); });
        Ld(a); St(target);
        EndBlock();
        LeaveComputed();
        return true;
    }

    private bool Jcc()
    {
        Label taken = il.DefineLabel();
        Cond(X->Sub); St(cond);
        EndBlock();
        FlushRegs(); // before the arms part: each arm's Leave then has nothing left to write
        Ld(cond); il.Emit(OpCodes.Brtrue, taken);
        Leave(X->NextIp);
        il.MarkLabel(taken);
        Leave(X->Imm);
        return true;
    }
}
