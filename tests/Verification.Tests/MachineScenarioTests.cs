using Harness.Verification.Scenarios;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Verification.Tests;

/// <summary>
/// The bare-machine scenarios of the seeded-bug catalogue: each planted bug is found within its
/// budget and its saved trace replays the same failure; each correct form passes the same budget
/// clean. Seeds are fixed, so every run explores the same executions (budgets leave a wide margin
/// over the iteration that finds the bug: docs/verification.md has the measurements).
/// </summary>
public class MachineScenarioTests(ITestOutputHelper output)
{
    private readonly ScenarioChecks checks = new(output);

    private ExploreReport Explore(Scenario s, uint iterations, ExploreStrategy strategy = ExploreStrategy.Random) =>
        checks.Explore(s, ScenarioChecks.Options(iterations, strategy));

    // Budget: 10 executions. Random scheduling loses an update in the first.
    [Theory]
    [InlineData(ExploreStrategy.Random)]
    [InlineData(ExploreStrategy.Prioritized)]
    public void PlainIncrementLosesAnUpdate(ExploreStrategy strategy)
    {
        var s = MachineScenarios.LostUpdate(atomic: false);
        var r = Explore(s, 10, strategy);
        checks.AssertFoundAndReplays(s, r, "lost update: the shared counter is");
    }

    [Theory]
    [InlineData(ExploreStrategy.Random)]
    [InlineData(ExploreStrategy.Prioritized)]
    public void LockedIncrementPassesClean(ExploreStrategy strategy)
    {
        var r = Explore(MachineScenarios.LostUpdate(atomic: true), 10, strategy);
        ScenarioChecks.AssertClean(r, 10);
    }

    // Budget: 300 executions; the window is 1 instruction boundary of the 17-instruction loop.
    [Fact]
    public void InterruptBetweenSaveAndRestoreClobbersPerCpuScratch()
    {
        var s = MachineScenarios.InterruptScratch(scratchOnStack: false);
        var r = Explore(s, 300);
        checks.AssertFoundAndReplays(s, r, "the scratch value was clobbered: the timer interrupt arrived at rip 0x");
    }

    [Fact]
    public void ScratchOnTheStackPassesClean()
    {
        var r = Explore(MachineScenarios.InterruptScratch(scratchOnStack: true), 300);
        ScenarioChecks.AssertClean(r, 300);
    }
}
