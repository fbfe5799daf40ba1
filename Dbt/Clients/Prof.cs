using Harness.Dbt.Translate;

namespace Harness.Dbt.Clients;

/// <summary>
/// The paper's prof client: guest instructions executed from the cache (exact: each segment adds
/// its length when it starts), indirect branches, jumptable level-1 hits and misses (counted in the
/// inline lookup), and dispatcher entries (host-side, <see cref="DbtStats"/>). Level-2 hits are the
/// level-1 misses the shared level-2 routine resolved: every level-1 miss goes there, and a level-2
/// miss enters the dispatcher once (<see cref="DbtStats.IndirectDispatches"/>).
/// </summary>
public sealed class Prof : Client
{
    public const string ClientName = "prof";

    private Counter instructions = null!, indirect = null!, level1Hits = null!, level1Misses = null!;
    private DbtStats stats = null!;

    public override string Name => ClientName;

    public override void Attach(ClientContext context)
    {
        stats = context.Stats;
        instructions = context.NewCounter("instructions");
        indirect = context.NewCounter("indirect-branches");
        level1Hits = context.NewCounter("jumptable-level1-hits");
        level1Misses = context.NewCounter("jumptable-level1-misses");
    }

    public override void OnSegment(Emitter e, Segment segment) => segment.AddLengthTo(instructions);

    public override void OnLookup(Emitter e, LookupPoint point) => Snippets.AddFlagsSaved(e, point switch
    {
        LookupPoint.Start => indirect,
        LookupPoint.Level1Hit => level1Hits,
        _ => level1Misses,
    });

    /// <summary>The counts so far (the guest's counters and the dispatcher's, read one after another).</summary>
    public ProfCounts Read() => new(instructions.Read(), indirect.Read(), level1Hits.Read(), level1Misses.Read(),
        stats.DispatcherEntries, stats.IndirectDispatches);
}

/// <summary>prof's counts at one moment, or (by subtraction) over an interval.</summary>
public readonly record struct ProfCounts(long Instructions, long IndirectBranches, long Level1Hits, long Level1Misses,
    long DispatcherEntries, long JumpTableMisses)
{
    public long Level2Hits => Level1Misses - JumpTableMisses;
    public double Level1HitRate => Rate(Level1Hits);
    public double Level2HitRate => Rate(Level2Hits);
    /// <summary>Indirect branches resolved in the jumptable (either level), as the paper reports it.</summary>
    public double HitRate => Rate(Level1Hits + Level2Hits);

    private double Rate(long n) => IndirectBranches == 0 ? 0 : (double)n / IndirectBranches;

    public static ProfCounts operator -(ProfCounts a, ProfCounts b) => new(
        a.Instructions - b.Instructions, a.IndirectBranches - b.IndirectBranches, a.Level1Hits - b.Level1Hits,
        a.Level1Misses - b.Level1Misses, a.DispatcherEntries - b.DispatcherEntries, a.JumpTableMisses - b.JumpTableMisses);

    public override string ToString() =>
        $"prof: instructions={Instructions} indirect-branches={IndirectBranches} level1-hits={Level1Hits} level2-hits={Level2Hits} " +
        $"jumptable-misses={JumpTableMisses} dispatcher-entries={DispatcherEntries}";
}
