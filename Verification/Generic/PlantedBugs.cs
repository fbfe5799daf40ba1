using Harness.Dbt;

namespace Harness.Verification.Generic;

/// <summary>
/// A realistic mistake in a rule or mechanism, plantable through <see cref="DbtOptions"/>: the
/// translator configuration it needs (a bug in no-callret's ret lookup does not exist under call/ret
/// identity) and whether it lives in the prof client's snippets.
/// </summary>
public sealed record PlantedDbtBug(string Name, string Description, Func<DbtOptions, DbtOptions> Apply, string Configuration = "default", bool Prof = false);

/// <summary>Every planted bug the generic scenarios accept: the properties' twins and the bespoke scenarios' bugs, one table.</summary>
public static class PlantedBugs
{
    public static readonly IReadOnlyList<PlantedDbtBug> All =
    [
        .. Harness.Properties.Catalog.Planted.Select(b => new PlantedDbtBug(b.Name, b.Description, b.Apply, b.Configuration, b.Prof)),
        new("lookup-with-interrupts", "the inline jumptable lookup runs with interrupts on (no pushfq; cli): an interrupt between its hit test and its read of tx can see the entry replaced (the paper's most subtle issue)",
            o => o with { PlantedLookupWithInterrupts = true }),
        new("edge-without-cli", "edge stubs enter the dispatcher with interrupts on (pushfq; nop; vmcall)",
            o => o with { PlantedEdgeWithoutCli = true }),
        new("torn-chaining-patch", "the chaining patch stores its rel32 one byte at a time: another vCPU can run a branch half patched",
            o => o with { PlantedTornChainingPatch = true }),
    ];

    /// <summary>The bug named name; the message lists the known names.</summary>
    public static PlantedDbtBug Find(string name) => All.FirstOrDefault(b => b.Name == name)
        ?? throw new ArgumentException($"unknown planted bug '{name}' (known: {string.Join(", ", All.Select(b => b.Name))})");
}
