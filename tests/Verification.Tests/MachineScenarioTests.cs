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
    private ExploreReport Explore(Scenario s, uint iterations, ExploreStrategy strategy = ExploreStrategy.Random, uint seed = 1, uint maxSteps = 50_000)
    {
        var r = Explorer.Explore(s, new ExploreOptions
        {
            Iterations = iterations, Seed = seed, Strategy = strategy, MaxSchedulingSteps = maxSteps, TraceDirectory = Support.TraceDir,
        });
        output.WriteLine(r.ToString());
        return r;
    }

    private void AssertFoundAndReplays(Scenario s, ExploreReport r, string expected)
    {
        Assert.True(r.BugFound, $"no bug found:\n{r}\n{r.Log}");
        Assert.Contains(expected, r.Failure);
        Assert.True(File.Exists(r.TracePath), $"trace file {r.TracePath} missing");
        var replay = Explorer.Replay(s, r.TracePath!);
        output.WriteLine($"replay: {replay.Reproduced} in {replay.Elapsed.TotalSeconds:F2} s: {replay.Failure}");
        Assert.True(replay.Reproduced, $"the trace did not reproduce the bug:\n{replay.Log}");
        Assert.Equal(r.Failure, replay.Failure);
    }

    private static void AssertClean(ExploreReport r, uint iterations)
    {
        Assert.False(r.BugFound, $"unexpected bug: {r.Failure}\n{r.Log}");
        Assert.Equal((int)iterations, r.IterationsRun);
        Assert.Equal(0, r.StepBoundHits);
    }

    // Budget: 10 executions. Random scheduling loses an update in the first.
    [Theory]
    [InlineData(ExploreStrategy.Random)]
    [InlineData(ExploreStrategy.Prioritized)]
    public void PlainIncrementLosesAnUpdate(ExploreStrategy strategy)
    {
        var s = MachineScenarios.LostUpdate(atomic: false);
        var r = Explore(s, 10, strategy);
        AssertFoundAndReplays(s, r, "lost update: the shared counter is");
    }

    [Theory]
    [InlineData(ExploreStrategy.Random)]
    [InlineData(ExploreStrategy.Prioritized)]
    public void LockedIncrementPassesClean(ExploreStrategy strategy)
    {
        var r = Explore(MachineScenarios.LostUpdate(atomic: true), 10, strategy);
        AssertClean(r, 10);
    }

    // Budget: 300 executions; the window is 1 instruction boundary of the 17-instruction loop.
    [Fact]
    public void InterruptBetweenSaveAndRestoreClobbersPerCpuScratch()
    {
        var s = MachineScenarios.InterruptScratch(scratchOnStack: false);
        var r = Explore(s, 300);
        AssertFoundAndReplays(s, r, "the scratch value was clobbered: the timer interrupt arrived at rip 0x");
    }

    [Fact]
    public void ScratchOnTheStackPassesClean()
    {
        var r = Explore(MachineScenarios.InterruptScratch(scratchOnStack: true), 300);
        AssertClean(r, 300);
    }
}
