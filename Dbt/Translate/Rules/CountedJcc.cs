using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// jrcxz/jecxz/loop/loope/loopne (rel8 only): <c>op X; jmp short Over; X: jmp rel32 target (chained); Over:</c>.
/// </summary>
internal sealed class CountedJccRule : Rule
{
    public override string Name => "counted-jcc";
    public override Flow Emit(Emitter e)
    {
        var op = e.Native;
        op.NearBranch64 = e.LabelAhead(2);                                   // X
        e.Add(op);
        e.Add(Instruction.CreateBranch(Code.Jmp_rel8_64, e.LabelAhead(2)));   // Over
        e.BranchToNative(Emitter.Jmp, e.Native.NearBranch64, EdgeKind.Jcc);
        return Flow.Continue;
    }
}
