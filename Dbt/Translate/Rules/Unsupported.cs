namespace Harness.Dbt.Translate;

/// <summary>
/// Instructions the translator does not handle. Translation fails lazily: the block ends just
/// before it with an edge, and if that edge ever runs, the dispatcher stops the machine naming it.
/// </summary>
internal sealed class UnsupportedRule : Rule
{
    public override string Name => "unsupported";
    public override Flow Emit(Emitter e) => throw new UnsupportedInstructionException(e.Native);
}
