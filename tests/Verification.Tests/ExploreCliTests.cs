using Harness.Tests.Shared;
using Harness.Verification.Generic;
using Xunit;

namespace Harness.Verification.Tests;

/// <summary>`harness explore` and `harness replay` as a user runs them: exit codes, the saved trace, the replay, bad input.</summary>
public class ExploreCliTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(3);

    [Fact]
    public void ListNamesEveryScenarioAndPlantedBug()
    {
        var (code, stdout, stderr) = HarnessCli.Run(Timeout, "explore", "--list");
        Assert.True(code == 0, stderr);
        foreach (var e in ScenarioRegistry.All) Assert.Contains(e.Name, stdout);
        foreach (var b in PlantedBugs.All) Assert.Contains(b.Name, stdout);
    }

    [Theory]
    [InlineData("nope", "unknown scenario 'nope'")]
    [InlineData("", "name a scenario")]
    [InlineData("program --planted nope", "unknown planted bug 'nope'")]
    [InlineData("program --vcpus 9", "1..4 vCPUs")]
    [InlineData("program --dbt off", "runs translated")]
    [InlineData("lost-update-plain --dbt default", "takes no --dbt")]
    [InlineData("program --time-budget soon", "--time-budget: 'soon' is not a duration")]
    [InlineData("program --iterations 0", "--iterations must be at least 1")]
    [InlineData("program --strategy best", "best")]
    [InlineData("kernel --kernel /nonexistent/kernel.elf", "/nonexistent/kernel.elf: no such file")]
    public void BadInputIsRefusedWithExit2NamingIt(string args, string message)
    {
        var (code, _, stderr) = HarnessCli.Run(Timeout, ["explore", .. args.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        Assert.True(code == 2, $"exit {code}: {stderr}");
        Assert.Contains(message, stderr);
    }

    [Fact]
    public void ABugExitsOneWithATraceThatReplayReproduces()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"explore-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = HarnessCli.Run(Timeout, "explore", "program", "--programs", "100", "--iterations", "40",
                "--planted", "fixup-not-registered", "--traces", dir);
            Assert.True(code == 1, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Contains("bug found in iteration", stdout);
            Assert.Contains("the translated run differs from the native run", stdout);
            string trace = Directory.GetFiles(dir, "*.trace.json").Single();
            Assert.Contains($"replay: harness replay {trace}", stdout);
            Assert.Equal("program", HarnessTrace.Read(trace).Scenario);

            var (rc, rout, rerr) = HarnessCli.Run(Timeout, "replay", trace);
            Assert.True(rc == 0, $"exit {rc}\n{rout}\n{rerr}");
            Assert.Contains("reproduced", rout);
            Assert.Contains("the same failure", rout);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ACleanExplorationExitsZeroWithItsCounts()
    {
        var (code, stdout, stderr) = HarnessCli.Run(Timeout, "explore", "program", "--programs", "10", "--iterations", "20", "--traces", Path.GetTempPath());
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Contains("clean", stdout);
        Assert.Contains("random strategy, seed 1", stdout);
    }

    [Fact]
    public void AMalformedTraceIsRefusedWithExit2NamingTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"trace-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, "{\"Settings\": {}, \"Steps\": []}");
        try
        {
            var (code, _, stderr) = HarnessCli.Run(Timeout, "replay", path);
            Assert.True(code == 2, $"exit {code}: {stderr}");
            Assert.Contains(path, stderr);
            Assert.Contains("not a harness trace", stderr);
        }
        finally { File.Delete(path); }
    }
}
