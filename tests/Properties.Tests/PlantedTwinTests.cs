using Xunit;

namespace Harness.Properties.Tests;

/// <summary>
/// Every property proves it can fail: its planted twin (a realistic translator bug, a DbtOptions
/// switch) is found from a fixed run seed within a stated number of cases, FsCheck shrinks the
/// counterexample to at most a stated number of instructions, and the failure prints the shrunk
/// program as assembly with a translated-vs-native diff. Each twin's saved failing case (the seed
/// and size `harness props` prints in its replay line) fails again as the first case.
/// </summary>
public class PlantedTwinTests
{
    /// <summary>The run seed of every twin's search (FsCheck's (seed, gamma); the gamma is odd).</summary>
    public static readonly ReplaySeed RunSeed = new(20261207, 11400714819323198485);

    /// <summary>The MaxTest of every twin's search (the case sequence depends on it).</summary>
    public const int SearchCases = 1000;

    /// <summary>A twin: the bug, the cases within which it is found from <see cref="RunSeed"/>, the largest shrunk program, its saved failing case.</summary>
    /// <summary>Seed: a run seed of its own (and its search size), where the common one does not reach the twin within SearchCases (said why in the table's comment).</summary>
    public sealed record Twin(string Bug, int WithinCases, int ShrunkAtMost, string SavedCase, ReplaySeed? Seed = null, int Search = SearchCases)
    {
        public override string ToString() => Bug;
    }

    // Found at (cases, shrunk instructions) from RunSeed when this table was made: fixup-not-registered
    // (53, 4), counter-clobbers-flags (1, 0), jmp-flips-carry (11, 3), scratch-in-per-cpu-cell (1, 0),
    // no-tx-nextpc-restore (1, 4), chain-relative-to-stub (2, 0), switchoff-keeps-stacks (1, 0),
    // stub-targets-ignored-at-safe-points (175, 6), level2-return-not-recovered (539, 33, under
    // no-callret), counted-jcc-taken-not-recovered (739, 43), exit-stub-recovery-keeps-flags (6, 0);
    // 0: the worker's fixed prologue and epilogue alone show it. Two twins are not reached from
    // RunSeed within 1000 cases and search from a run seed of their own (the first of 1, 2, ... that
    // finds them; how often a seed does is in docs/properties.md): switch-in-interrupt-shadow from
    // (3, gamma) at case 196 (6 instructions), ret-imm-moved-with-interrupts from (7, gamma) with
    // 2000 cases at case 220 (5). The last five were found on the correct translator by the flush
    // property (kept as twins: the rare interleavings they need make them the slowest). The bounds
    // leave room for generator changes; a twin that needs more is a weaker check and should be
    // looked at, not the bound raised. Saved cases are the replay lines `harness props` printed (a
    // change to the generators' tables or the window choice generates other cases from the same
    // seeds: re-save them).
    public static readonly Twin[] Twins =
    [
        new("fixup-not-registered", 120, 8, "(3894168915674749866,13024474445539369687,6)"),
        new("counter-clobbers-flags", 10, 4, "(5136735609204658477,736072115155601513,1)"),
        new("jmp-flips-carry", 40, 6, "(6051635884924165403,9889117318500156839,2)"),
        new("scratch-in-per-cpu-cell", 10, 4, "(5136735609204658477,736072115155601513,1)"),
        new("no-tx-nextpc-restore", 10, 8, "(5136735609204658477,736072115155601513,1)"),
        new("chain-relative-to-stub", 10, 4, "(8459770011048550429,1805030180834630521,1)"),
        new("switchoff-keeps-stacks", 10, 4, "(5136735609204658477,736072115155601513,1)"),
        new("stub-targets-ignored-at-safe-points", 300, 10, "(12865200564154917358,17398400295372215989,18)"),
        new("switch-in-interrupt-shadow", 300, 10, "(6349587533783752787,5427883201620473825,20)", Seed: new(3, 11400714819323198485)),
        new("level2-return-not-recovered", 800, 60, "(10965004974000869325,6635461499126899409,54)"),
        new("counted-jcc-taken-not-recovered", 1000, 60, "(15697508411045204173,13146599921901826677,74)"),
        new("ret-imm-moved-with-interrupts", 300, 10, "(5810617803993144604,13413620779572355791,12)", Seed: new(7, 11400714819323198485), Search: 2000),
        new("exit-stub-recovery-keeps-flags", 10, 4, "(17546943030685839554,15509289604855952313,2)"),
    ];

    public static TheoryData<Twin> All => new(Twins);

    private static (PropertyDef Def, Setting Setting) For(PlantedBug bug) => (Catalog.Property(bug.Property), bug.Setting);

    [Fact]
    public void EveryPlantedBugHasATwinRowAndEveryPropertyATwin()
    {
        Assert.Equal(Catalog.Planted.Select(b => b.Name).Order(), Twins.Select(t => t.Bug).Order());
        foreach (var p in Catalog.Properties)
            Assert.True(Catalog.Planted.Any(b => b.Property == p.Name), $"property {p.Name} has no planted twin");
    }

    [Theory]
    [MemberData(nameof(All))]
    public void TheTwinIsFoundShrunkAndPrinted(Twin twin)
    {
        var bug = Catalog.Bug(twin.Bug);
        var (def, setting) = For(bug);
        // FsCheck's sizes grow over MaxTest cases, so the cases a seed generates depend on it: the
        // search always runs as `harness props --max-test 1000 --replay RunSeed` does (it stops at
        // the first failure), and the bound is on the case number.
        var seed = twin.Seed ?? RunSeed;
        var r = PropertyRunner.Run(def, setting, new CheckOptions { MaxTest = twin.Search, Replay = seed });
        Assert.False(r.Passed, $"{bug.Name} was not found by {def.Name} within {twin.Search} cases from {seed}");
        Assert.True(r.Tests <= twin.WithinCases, $"{bug.Name} was found by {def.Name} at case {r.Tests}, not within {twin.WithinCases}");
        Assert.True(r.ShrunkInstructions <= twin.ShrunkAtMost,
            $"{bug.Name}: the shrunk counterexample has {r.ShrunkInstructions} instructions (at most {twin.ShrunkAtMost}):\n{r.Shrunk}");
        // The message: the diff (a row per difference, the two runs named) and the program as assembly.
        Assert.NotNull(r.Failure);
        Assert.Matches(@"differs|not native|stored outside|the state check failed", r.Failure);
        string listing = r.Shrunk!.ToString();
        Assert.Contains("; pieces", listing);
        Assert.Matches(@"ffffffff802[0-9a-f]{5}  (mov|call|jmp|lea|push|pop|add|sub|xor|and|or|cmp|test|inc|dec|nop|j[a-z]+|lidt|iretq|ret)\b", listing);
        // The shrunk case fails again when checked on its own.
        Assert.NotNull(PropertyRunner.Safe(def, r.Shrunk, setting));
    }

    [Theory]
    [MemberData(nameof(All))]
    public void TheSavedCaseReplaysAsAFailure(Twin twin)
    {
        var bug = Catalog.Bug(twin.Bug);
        var (def, setting) = For(bug);
        var r = PropertyRunner.Run(def, setting, new CheckOptions { MaxTest = 1, Replay = ReplaySeed.Parse(twin.SavedCase), MaxShrinks = 0 });
        Assert.False(r.Passed, $"{bug.Name}: the saved case {twin.SavedCase} passed");
        Assert.Equal(1, r.Tests);
        // The correct translator passes the same case: the failure is the planted bug's.
        var ok = PropertyRunner.Run(def, bug.Setting with { Options = null }, new CheckOptions { MaxTest = 1, Replay = ReplaySeed.Parse(twin.SavedCase) });
        Assert.True(ok.Passed, $"{bug.Name}: the saved case fails without the bug too:\n{ok.Failure}");
    }
}
