using Harness.Dbt.Dispatch;

namespace Harness.Dbt.Translate;

/// <summary>
/// call rel (call/ret identity): <c>call tx(X)</c> (through an edge until chained) pushes the code-cache
/// address of the next translated instruction, and the fall-through continues in the same block, so
/// the callee's plain <c>ret</c> lands back in the cache.
/// </summary>
internal sealed class DirectCallRule : Rule
{
    public override string Name => "direct-call";
    public override Flow Emit(Emitter e)
    {
        e.BranchToNative(Emitter.Call, e.Native.NearBranch64, EdgeKind.Call);
        return Flow.Continue;
    }
}
