using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Verification.Scenarios;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Verification.Tests;

/// <summary>The exploration API itself: reports, traces, replays, and what counts as a bug.</summary>
public class ExplorerTests(ITestOutputHelper output)
{
    private static ExploreOptions Options(uint iterations = 10, uint maxSteps = 50_000) =>
        new() { Iterations = iterations, Seed = 7, MaxSchedulingSteps = maxSteps, TraceDirectory = Support.TraceDir };

    private ExploreReport Explore(Scenario s, ExploreOptions o)
    {
        var r = Explorer.Explore(s, o);
        output.WriteLine(r.ToString());
        return r;
    }

    [Fact]
    public void ReportNamesTheIterationTheTraceAndTheCounts()
    {
        var r = Explore(MachineScenarios.LostUpdate(atomic: false), Options());
        Assert.True(r.BugFound);
        Assert.Equal(r.IterationsRun, r.Iteration);
        Assert.Equal(7u, r.Seed);
        Assert.EndsWith(".trace.json", r.TracePath);
        Assert.Contains("lost update", File.ReadAllText(r.ReadableTracePath!));
        Assert.True(r.TotalSteps > 0);
    }

    [Fact]
    public void ExecutionsCutAtTheStepBoundAreCountedNotReported()
    {
        // 30 steps end every execution early: Coyote interrupts the vCPU threads mid-run, the
        // control waits for them before the machine is freed, and no bug is claimed.
        var r = Explore(MachineScenarios.LostUpdate(atomic: true), Options(iterations: 5, maxSteps: 30));
        Assert.False(r.BugFound, r.Failure);
        Assert.Equal(5, r.StepBoundHits);
    }

    [Fact]
    public void ReplayOfAMissingTraceNamesTheFile()
    {
        string path = Path.Combine(Support.TraceDir, "no-such.trace.json");
        var e = Assert.Throws<TraceFileException>(() => Explorer.Replay(MachineScenarios.LostUpdate(false), path));
        Assert.Contains(path, e.Message);
    }

    [Theory]
    [InlineData("not json at all", "invalid JSON")]
    [InlineData("{\"Settings\": {}}", "expected a JSON object with \"Settings\" and \"Steps\"")]
    [InlineData("{\"Settings\": {}, \"Steps\": []}", "has no steps")]
    [InlineData("{\"Settings\": {}, \"Steps\": [1, 2]}", "a step is not a string")]
    public void ReplayOfAMalformedTraceNamesTheFile(string content, string problem)
    {
        Directory.CreateDirectory(Support.TraceDir);
        string path = Path.Combine(Support.TraceDir, $"malformed-{Guid.NewGuid():N}.trace.json");
        File.WriteAllText(path, content);
        var e = Assert.Throws<TraceFileException>(() => Explorer.Replay(MachineScenarios.LostUpdate(false), path));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void ReplayOnTheWrongScenarioDoesNotPassSilently()
    {
        var r = Explore(MachineScenarios.LostUpdate(atomic: false), Options());
        Assert.True(r.BugFound);
        // The trace's decisions do not fit the other scenario: either an error naming the file or
        // no reproduction, never the recorded failure.
        try
        {
            var replay = Explorer.Replay(MachineScenarios.InterruptScratch(scratchOnStack: false), r.TracePath!);
            output.WriteLine($"replay: {replay.Reproduced}: {replay.Failure}");
            Assert.NotEqual(r.Failure, replay.Failure);
        }
        catch (TraceFileException e)
        {
            output.WriteLine(e.Message);
            Assert.Contains(r.TracePath!, e.Message);
        }
    }

    [Fact]
    public void AHostExceptionOnAVcpuThreadIsABug()
    {
        // A monitor that throws stands for a harness bug on a vCPU thread: it must surface as the
        // failure (with the exception), never vanish in the thread.
        var inner = MachineScenarios.LostUpdate(atomic: true);
        var s = inner with
        {
            Build = ctx =>
            {
                int points = 0;
                ctx.Control.OnPoint += (v, kind, address) =>
                {
                    if (++points == 25) throw new InvalidOperationException($"planted harness bug on vCPU {v.Index}");
                };
                return inner.Build(ctx);
            },
        };
        var r = Explore(s, Options());
        Assert.True(r.BugFound);
        Assert.Equal(1, r.Iteration);
        Assert.Contains("host exception", r.Failure);
        Assert.Contains("InvalidOperationException: planted harness bug on vCPU", r.Failure);
        var replay = Explorer.Replay(s, r.TracePath!);
        Assert.True(replay.Reproduced);
        Assert.Equal(r.Failure, replay.Failure);
    }

    [Fact]
    public void AMonitorFindsTheRaceBeforeTheFinalCheck()
    {
        // The classic race monitor: a vCPU must not load the counter while the other holds a
        // loaded copy it has not stored back yet (both inside the load-add-store window).
        const ulong counter = RingZeroGuest.Data;
        var inner = MachineScenarios.LostUpdate(atomic: false);
        var s = inner with
        {
            Build = ctx =>
            {
                var holding = new bool[2];
                ctx.Control.OnPoint += (v, kind, address) =>
                {
                    if (address != counter) return;
                    if (kind == PointKind.Load)
                    {
                        Verify.That(!holding[1 - v.Index], $"vCPU {v.Index} loads the counter while vCPU {1 - v.Index} holds an unstored copy");
                        holding[v.Index] = true;
                    }
                    else if (kind == PointKind.Store) holding[v.Index] = false;
                };
                return inner.Build(ctx);
            },
        };
        var r = Explore(s, Options());
        Assert.True(r.BugFound);
        Assert.Contains("loads the counter while vCPU", r.Failure);
        var replay = Explorer.Replay(s, r.TracePath!);
        Assert.True(replay.Reproduced);
        Assert.Equal(r.Failure, replay.Failure);
    }

    [Fact]
    public void AGuestDeadlockStopsTheMachineAndFailsTheCheck()
    {
        // The BSP starts the AP and both halt with interrupts off: no one can wake either.
        var g = new RingZeroGuest();
        var a = g.A;
        var halt = a.CreateLabel("halt");
        g.StartAp(1, halt);
        a.Label(ref halt);
        a.cli();
        a.hlt();
        a.jmp(halt);
        g.Assemble();
        var s = new Scenario("both-halted", ctx =>
        {
            var m = new Harness.Smp.Machine(ctx.Options(vcpus: 2, maxInstructions: 100_000));
            g.Load(m);
            return m;
        }, run => run.ExpectExit(0)) { Entry = RingZeroGuest.Code };
        var r = Explore(s, Options(iterations: 3));
        Assert.True(r.BugFound);
        Assert.Contains("the machine stopped with Deadlock", r.Failure);
    }

    [Fact]
    public void SurveyMeasuresIterationsToFindOverIndependentSeeds()
    {
        var r = Explorer.Survey(MachineScenarios.InterruptScratch(scratchOnStack: false), Options(iterations: 300), explorations: 5);
        output.WriteLine(r.ToString());
        Assert.Equal(5, r.Found);
        Assert.Equal(5, r.Runs.Select(x => x.Seed).Distinct().Count());
        Assert.InRange(r.MaxIterations, 1, 300);
        // Coyote seeds iteration i with seed + i: nearby seeds would find the bug at iterations n, n-1, n-2, ...
        var found = r.IterationsToFind.ToArray();
        Assert.False(found.Zip(found.Skip(1)).All(p => p.Second == p.First - 1), $"correlated seeds: {string.Join(",", found)}");
    }

    [Fact]
    public void OptionsAreChecked()
    {
        var s = MachineScenarios.LostUpdate(atomic: true);
        Assert.Throws<ArgumentOutOfRangeException>(() => Explorer.Explore(s, Options() with { MaxSchedulingSteps = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Explorer.Explore(s, Options() with { Iterations = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CoyoteControl(new CoyoteOptions { Slice = 0 }));
        Assert.True(Seams.Points, "the module initializer did not turn the scheduling points on");
    }
}
