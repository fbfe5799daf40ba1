using Harness.Dbt.Dispatch;

namespace Harness.Dbt.Translate;

/// <summary>jmp rel: a chained rel32 jmp to the target's translation (through an edge until chained).</summary>
internal sealed class DirectJmpRule : Rule
{
    public override string Name => "direct-jmp";
    public override Flow Emit(Emitter e)
    {
        e.BranchToNative(Emitter.Jmp, e.Native.NearBranch64, EdgeKind.Jmp);
        return Flow.EndBlock;
    }
}
