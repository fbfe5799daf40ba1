namespace Harness.Dbt.Translate;

/// <summary>Ordinary instructions: copied; RIP-relative operands re-encoded to reach the same data.</summary>
internal sealed class IdentityRule(bool ends) : Rule
{
    public override string Name => ends ? "identity-end" : "identity";
    public override Flow Emit(Emitter e)
    {
        e.Identity();
        return ends ? Flow.EndBlock : Flow.Continue;
    }
}
