using Harness.Dbt;

namespace Harness.Verification.Generic;

/// <summary>
/// A realistic mistake in a rule or mechanism, plantable through <see cref="DbtOptions"/>: the
/// translator configuration it needs (a bug in no-callret's ret lookup does not exist under call/ret
/// identity) and whether it lives in the prof client's snippets.
/// </summary>
/// <param name="Property">The property the catalogue runs against it (a twin's own; for the others, the property that should catch that class of bug), or null.</param>
/// <param name="Tso">Wrong only under x86-TSO: the catalogue's kernel checker runs it with store buffers (docs/tso.md); the SC checkers cannot see it.</param>
public sealed record PlantedDbtBug(string Name, string Description, Func<DbtOptions, DbtOptions> Apply, string Configuration = "default", bool Prof = false, string? Property = null,
    bool Tso = false)
{
    public Harness.Properties.Setting Setting => new(Configuration, Prof, Apply(DbtOptions.Default));
}

/// <summary>Every planted bug the generic scenarios accept: the properties' twins and the bespoke scenarios' bugs, one table.</summary>
public static class PlantedBugs
{
    public static readonly IReadOnlyList<PlantedDbtBug> All =
    [
        .. Harness.Properties.Catalog.Planted.Select(b => new PlantedDbtBug(b.Name, b.Description, b.Apply, b.Configuration, b.Prof, b.Property)),
        new("lookup-with-interrupts", "the inline jumptable lookup runs with interrupts on (no pushfq; cli): an interrupt between its hit test and its read of tx can see the entry replaced (the paper's most subtle issue)",
            o => o with { PlantedLookupWithInterrupts = true }, Property: "tx-nextpc-restore"),
        new("edge-without-cli", "edge stubs enter the dispatcher with interrupts on (pushfq; nop; vmcall)",
            o => o with { PlantedEdgeWithoutCli = true }, Property: "translated-equals-native"),
        new("torn-chaining-patch", "the chaining patch stores its rel32 one byte at a time: another vCPU can run a branch half patched",
            o => o with { PlantedTornChainingPatch = true }, Property: "chained-equals-unchained"),
        new("recovery-off-by-one", "switchoff maps a parked vCPU with the recovery of the block's next recovery point (a fencepost in the lookup): it resumes at the wrong native instruction or stack",
            o => o with { PlantedRecoveryOffByOne = true }, Property: "switch-equals-native"),
        new("level2-move-to-front-with-interrupts", "the level-2 jumptable routine moves a hit to the front of its group with the native IF (an interrupt sees the group half swapped)",
            o => o with { PlantedLevel2MoveToFrontWithInterrupts = true }, Configuration: "no-callret", Property: "flush-equals-fresh"),
        new("stack-fence-unlocked", "a locked RMW on the stack is copied without its lock prefix (\"the stack is private\"): gcc's full fence is lock or $0,(%rsp), so every " +
            "__atomic_thread_fence is gone; harmless under SC, under TSO (explore kernel --tso) the AP mailbox stores can trail the start-up IPI",
            o => o with { RuleOverrides = new Dictionary<Iced.Intel.Mnemonic, string>(o.RuleOverrides) { [Iced.Intel.Mnemonic.Or] = "planted-unlocked-stack-rmw" } }, Tso: true),
        new("flush-skips-one-vcpu", "switchoff does not map the last other vCPU's parked state to native: it resumes in the wiped cache",
            o => o with { PlantedFlushSkipsOneVcpu = true }, Property: "flush-equals-fresh"),
    ];

    /// <summary>The bug named name; the message lists the known names.</summary>
    public static PlantedDbtBug Find(string name) => All.FirstOrDefault(b => b.Name == name)
        ?? throw new ArgumentException($"unknown planted bug '{name}' (known: {string.Join(", ", All.Select(b => b.Name))})");
}
