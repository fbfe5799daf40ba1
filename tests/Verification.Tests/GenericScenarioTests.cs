using Harness.Verification.Generic;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Verification.Tests;

/// <summary>
/// The generic scenarios know no bug: the same scenario and monitors (no DBT failure, final state
/// equal to the native run's; for the kernel: no panic, exit 0, result lines equal) find planted
/// bugs they were not written for, each within a stated budget, and replay them from the saved
/// trace; the correct translator passes the same budgets clean.
/// </summary>
public class GenericScenarioTests(ITestOutputHelper output)
{
    private readonly ScenarioChecks checks = new(output);

    // 100 generated programs, Coyote picking one per iteration (the CLI's --programs 100).
    private static Scenario Programs(string? planted, string? dbt = null, int vcpus = 2) =>
        ScenarioRegistry.Create("program", new ScenarioArgs { Planted = planted, Dbt = dbt, Programs = 100, Vcpus = vcpus });

    /// <summary>Planted bug, budget (iterations), what the failure says. Budgets: about 4x the iteration that found it from seed 1 (docs/verification.md).</summary>
    public static TheoryData<string, uint, string> ProgramFinds => new()
    {
        { "fixup-not-registered", 40, "the translated run differs from the native run" },
        { "counter-clobbers-flags", 20, "the translated run differs from the native run" },
        { "jmp-flips-carry", 150, "the translated run differs from the native run" },
        { "lookup-with-interrupts", 20, "dispatcher entered with interrupts enabled" },
        { "edge-without-cli", 20, "dispatcher entered with interrupts enabled" },
        { "no-tx-nextpc-restore", 120, "the translated run differs from the native run" },
    };

    [Theory]
    [MemberData(nameof(ProgramFinds))]
    public void TheProgramScenarioFindsAPlantedBugAndReplaysIt(string planted, uint budget, string expected)
    {
        var s = Programs(planted);
        var r = checks.Explore(s, ScenarioChecks.Options(budget, maxSteps: 100_000));
        checks.AssertFoundAndReplays(s, r, expected);
    }

    [Theory]
    [InlineData("default", 2)]
    [InlineData("no-callret", 2)]
    [InlineData("drk", 2)]
    [InlineData("default", 4)]
    public void TheCorrectTranslatorPassesTheProgramScenarioClean(string dbt, int vcpus)
    {
        const uint budget = 150;
        var r = checks.Explore(Programs(null, dbt, vcpus), ScenarioChecks.Options(budget, maxSteps: 100_000));
        ScenarioChecks.AssertClean(r, budget);
    }

    /// <summary>The flush bugs need a world stop inside the run: two flushes per execution at Coyote-chosen points.</summary>
    public static TheoryData<string, uint> FlushFinds => new()
    {
        { "switchoff-keeps-stacks", 10 },
        { "exit-stub-recovery-keeps-flags", 10 },
        { "stub-targets-ignored-at-safe-points", 300 },
        { "recovery-off-by-one", 10 },
        { "flush-skips-one-vcpu", 10 },
    };

    /// <summary>
    /// The level-2 move-to-front with interrupts on is beyond the scenarios' reach (an interrupt
    /// must come inside the swap and a flush while its frame is there): the flush property finds it,
    /// run against it by the catalogue as against any planted bug.
    /// </summary>
    [Fact]
    public void TheFlushPropertyFindsTheLevel2MoveToFrontWithInterruptsAndItsCaseReplays()
    {
        var bug = PlantedBugs.Find("level2-move-to-front-with-interrupts");
        var def = Harness.Properties.Catalog.Property(bug.Property!);
        var r = Harness.Properties.PropertyRunner.Run(def, bug.Setting, new Harness.Properties.CheckOptions
        {
            MaxTest = 600, Replay = new Harness.Properties.ReplaySeed(1, Harness.Properties.PropertyRunner.SurveyGamma), Threads = 2,
        }, def.Generation);
        output.WriteLine($"{(r.Passed ? "passed" : $"failed at case {r.Tests}")}: {r.Failure}");
        Assert.False(r.Passed, $"not found in {r.Tests} cases");
        var again = Harness.Properties.PropertyRunner.Run(def, bug.Setting, new Harness.Properties.CheckOptions { MaxTest = 1, Replay = r.CaseSeed }, def.Generation);
        Assert.False(again.Passed, "the failing case did not replay");
    }

    [Theory]
    [MemberData(nameof(FlushFinds))]
    public void TheProgramScenarioWithFlushesFindsAFlushBugAndReplaysIt(string planted, uint budget)
    {
        var s = ScenarioRegistry.Create("program", new ScenarioArgs { Planted = planted, Programs = 100, Flushes = 2 });
        var r = checks.Explore(s, ScenarioChecks.Options(budget, maxSteps: 100_000));
        checks.AssertFoundAndReplays(s, r, "");
    }

    [Fact]
    public void TheCorrectTranslatorPassesTheProgramScenarioWithFlushesClean()
    {
        const uint budget = 300;
        var s = ScenarioRegistry.Create("program", new ScenarioArgs { Programs = 100, Flushes = 2 });
        var r = checks.Explore(s, ScenarioChecks.Options(budget, maxSteps: 100_000));
        ScenarioChecks.AssertClean(r, budget);
        var flushes = s.Counters.Snapshot().Single(c => c.Name == "cache flushes").Total;
        output.WriteLine($"{flushes} flushes");
        Assert.True(flushes > budget, $"only {flushes} flushes in {budget} executions");

        // Coverage saw what happened: every execution, the vCPUs' conflicting accesses to the
        // shared page and done flags in both orders, and interrupts at the dispatcher's exit.
        var cov = s.Coverage!;
        output.WriteLine(cov.Summary());
        var (pairs, interrupts, min, _, max) = cov.Report();
        Assert.Equal((int)budget, cov.Executions);
        Assert.Contains(pairs, p => p.BothOrders && p.First != p.Second);
        Assert.Contains(interrupts, i => i.Region == "dispatcher exit stub");
        Assert.Contains(interrupts, i => i.Region.StartsWith("rule ", StringComparison.Ordinal));
        Assert.True(min > 0 && max >= min, $"points per execution {min}..{max}");
        Assert.Contains("\"conflictingPairs\"", cov.ToJson(s.Name, (int)budget, bugFound: false));
    }

    private static string KernelPath
    {
        get
        {
            string path = Path.Combine(Support.RepoRoot, "guest", "build", "kernel", "kernel.elf");
            if (!File.Exists(path)) throw new FileNotFoundException($"{path} is missing: build the guests first (bash guest/build.sh)", path);
            return path;
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData("drk")] // the generic monitors hold under the DRK-style baseline too
    public void TheKernelScenarioFindsADispatcherEntryWithInterruptsOnAndReplaysIt(string? dbt)
    {
        var s = ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, Planted = "edge-without-cli", Dbt = dbt });
        var r = checks.Explore(s, ScenarioChecks.Options(2, maxSteps: 2_000_000));
        checks.AssertFoundAndReplays(s, r, "dispatcher entered with interrupts enabled");
    }

    [Fact]
    public void TheCorrectTranslatorPassesTheKernelScenarioClean()
    {
        var drk = checks.Explore(ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, Dbt = "drk" }), ScenarioChecks.Options(1, maxSteps: 2_000_000));
        ScenarioChecks.AssertClean(drk, 1);
        var r = checks.Explore(ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath }), ScenarioChecks.Options(1, maxSteps: 2_000_000));
        ScenarioChecks.AssertClean(r, 1);
    }

    [Fact]
    public void TheKernelScenarioFlushesATinyCacheUnderCoyoteAndFindsStacksLeftPointingIntoIt()
    {
        var clean = ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, CacheKiB = 12 });
        var r = checks.Explore(clean, ScenarioChecks.Options(1, maxSteps: 2_000_000));
        ScenarioChecks.AssertClean(r, 1);
        Assert.True(clean.Counters.Snapshot().Single(c => c.Name == "cache flushes").Total >= 1, "the 12 KiB cache was never flushed");

        var s = ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, CacheKiB = 12, Planted = "switchoff-keeps-stacks" });
        var b = checks.Explore(s, ScenarioChecks.Options(2, maxSteps: 2_000_000));
        checks.AssertFoundAndReplays(s, b, "dbt: vCPU");
    }

    /// <summary>
    /// A translator bug that is wrong only under x86-TSO: the planted rule copies locked RMWs on the
    /// stack without their lock prefix, which removes gcc's full fence (lock or $0,(%rsp)). The
    /// generic kernel scenario with --tso finds it (an AP starts from a stale mailbox: its start-up
    /// IPI overtook the buffered mailbox stores) and the trace replays; the same budget under SC
    /// finds nothing, and the correct translator passes clean under TSO.
    /// </summary>
    [Fact]
    public void TheKernelScenarioUnderTsoFindsADroppedFenceThatScCannotSee()
    {
        var tso = ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, Planted = "stack-fence-unlocked", Tso = true });
        var r = checks.Explore(tso, ScenarioChecks.Options(4, maxSteps: 5_000_000));
        checks.AssertFoundAndReplays(tso, r, "not a guest exit: vCPU 1"); // the AP: a triple fault or a far return to a garbage CS

        var sc = ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, Planted = "stack-fence-unlocked" });
        ScenarioChecks.AssertClean(checks.Explore(sc, ScenarioChecks.Options(4, maxSteps: 5_000_000)), 4);

        var clean = ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, Tso = true });
        ScenarioChecks.AssertClean(checks.Explore(clean, ScenarioChecks.Options(2, maxSteps: 5_000_000)), 2);
    }

    /// <summary>
    /// The race detector as one more monitor of the kernel scenario under the translator: the
    /// translated kernel reports no race outside its annotated set (translated code's accesses are
    /// mapped back to native instructions; the dispatcher's vmcalls order vCPUs as its translator
    /// lock does), and the annotated ones were seen, so the monitor was not idle.
    /// </summary>
    [Fact]
    public void TheTranslatedKernelHasNoRaceOutsideItsAnnotatedSet()
    {
        var s = ScenarioRegistry.Create("kernel", new ScenarioArgs { Kernel = KernelPath, Races = true });
        ScenarioChecks.AssertClean(checks.Explore(s, ScenarioChecks.Options(2, maxSteps: 5_000_000)), 2);
        var counters = s.Counters.Snapshot().ToDictionary(c => c.Name, c => c.Total);
        Assert.True(counters["plain accesses race-checked"] > 100_000, $"{counters["plain accesses race-checked"]} accesses checked");
        Assert.True(counters["intended races left out"] > 0, "no annotated race was seen: the monitor was idle");
    }

    /// <summary>
    /// Every iteration resumes a snapshot taken at the end of the boot self-test (the DBT switches
    /// on there, a world stop under Coyote): clean on the correct translator with the workload's
    /// results equal to the native run's, and a planted bug found and replayed from its trace (the
    /// replay takes the same snapshot again).
    /// </summary>
    [Fact]
    public void TheKernelScenarioFromASnapshotIsCleanAndFindsAPlantedBug()
    {
        var args = new ScenarioArgs { Kernel = KernelPath, Workloads = ["pipe_rtt"], SnapshotMarker = "selftest: kernel ok" };
        var clean = ScenarioRegistry.Create("kernel", args);
        var r = checks.Explore(clean, ScenarioChecks.Options(2, maxSteps: 2_000_000));
        ScenarioChecks.AssertClean(r, 2);
        Assert.Equal(2, clean.Counters.Snapshot().Single(c => c.Name == "switchons").Total);

        var s = ScenarioRegistry.Create("kernel", args with { Planted = "edge-without-cli" });
        var b = checks.Explore(s, ScenarioChecks.Options(2, maxSteps: 2_000_000));
        checks.AssertFoundAndReplays(s, b, "dispatcher entered with interrupts enabled");
    }

    [Theory]
    [InlineData("nope", "unknown scenario 'nope'")]
    [InlineData("lost-update-plain", "scenario lost-update-plain takes no --dbt")]
    [InlineData("program", "unknown planted bug 'nope'")]
    public void ABadScenarioOrOptionIsRefusedNamingIt(string name, string message)
    {
        var args = name == "program" ? new ScenarioArgs { Planted = "nope" } : new ScenarioArgs { Dbt = "default" };
        var e = Assert.Throws<ArgumentException>(() => ScenarioRegistry.Create(name, args));
        Assert.Contains(message, e.Message);
    }

    [Theory]
    [InlineData("{", "invalid JSON at line")]
    [InlineData("{\"Settings\": {}, \"Steps\": [\"S(0)\"]}", "a raw Coyote trace does not say which scenario")]
    [InlineData("{\"format\": \"harness-trace/9\", \"scenario\": \"program\"}", "trace format harness-trace/9")]
    [InlineData("{\"format\": \"harness-trace/1\", \"scenario\": \"program\"}", "without its scenario, options or Coyote trace")]
    public void AMalformedTraceIsRefusedNamingTheFile(string text, string message)
    {
        string path = Path.Combine(Path.GetTempPath(), $"trace-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, text);
        try
        {
            var e = Assert.Throws<TraceFileException>(() => HarnessTrace.Read(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(message, e.Message);
        }
        finally { File.Delete(path); }
    }
}
