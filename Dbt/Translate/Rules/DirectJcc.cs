using Harness.Dbt.Dispatch;

namespace Harness.Dbt.Translate;

/// <summary>jcc rel: a chained rel32 jcc; translation continues with the fall-through.</summary>
internal sealed class DirectJccRule : Rule
{
    public override string Name => "direct-jcc";
    public override Flow Emit(Emitter e)
    {
        e.BranchToNative(Emitter.Jcc(e.Native.ConditionCode), e.Native.NearBranch64, EdgeKind.Jcc);
        return Flow.Continue;
    }
}
