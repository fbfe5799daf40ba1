namespace Harness.Dbt;

/// <summary>How the translator runs. Milestone 1 has one configuration, "default".</summary>
public sealed class DbtOptions
{
    public static DbtOptions Default => new();

    /// <summary>A block ends (with a chained jmp to the next native instruction) after this many native instructions.</summary>
    public int MaxBlockInstructions { get; init; } = 256;

    /// <summary>
    /// Planted bug for the harness's self-check: the dispatcher never patches an edge, so every
    /// execution of an unchained branch re-enters the dispatcher. Only tests set it.
    /// </summary>
    internal bool DropChainingPatch { get; init; }
}
