using System.Text.RegularExpressions;
using System.Xml.Linq;
using Harness.Tests.Shared;
using Xunit;

namespace Harness.Properties.Tests;

/// <summary>`harness props` as a user runs it: exit codes, the failure report, the replay line, JUnit, bad input.</summary>
public class PropsCliTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(3);

    [Fact]
    public void ListNamesEveryPropertyAndPlantedBug()
    {
        var (code, stdout, stderr) = HarnessCli.Run(Timeout, "props", "--list");
        Assert.True(code == 0, stderr);
        foreach (var p in Catalog.Properties) Assert.Contains(p.Name, stdout);
        foreach (var b in Catalog.Planted) Assert.Contains(b.Name, stdout);
    }

    [Theory]
    [InlineData("--property nope", "no property named 'nope'")]
    [InlineData("--planted nope", "no planted bug named 'nope'")]
    [InlineData("--property scratch-on-stack --replay (12,34)", "must be odd")]
    [InlineData("--property scratch-on-stack --replay garbage", "expected (seed,gamma)")]
    [InlineData("--replay (12,35)", "--replay reproduces one property's run")]
    [InlineData("--max-test 0", "--max-test must be between 1 and 1000000")]
    [InlineData("--vcpus 9", "--vcpus must be between 1 and 4")]
    [InlineData("--property scratch-on-stack --vcpus 2", "scratch-on-stack checks 1 vCPU")]
    [InlineData("--junit /nonexistent-dir/report.xml", "does not exist")]
    [InlineData("--seeds 3 --property scratch-on-stack --replay (1,3)", "exclude each other")]
    [InlineData("--threads 0", "--threads must be between 1 and 256")]
    [InlineData("--dbt native", "native")]
    [InlineData("--bogus", "--bogus")]
    public void BadInputIsRefusedWithExit2NamingIt(string args, string message)
    {
        var (code, _, stderr) = HarnessCli.Run(Timeout, ["props", .. args.Split(' ')]);
        Assert.True(code == 2, $"exit {code}: {stderr}");
        Assert.Contains(message, stderr);
    }

    /// <summary>A fresh path for a --junit report, deleted after body.</summary>
    private static void WithJunit(Action<string> body)
    {
        string junit = Path.Combine(Path.GetTempPath(), $"props-{Guid.NewGuid():N}.xml");
        try { body(junit); }
        finally { File.Delete(junit); }
    }

    [Fact]
    public void APlantedBugFailsWithTheShrunkProgramTheDiffAndAReplayLineThatReproducesIt() => WithJunit(junit =>
        {
            var (code, stdout, stderr) = HarnessCli.Run(Timeout, "props", "--planted", "counter-clobbers-flags", "--max-test", "20", "--junit", junit);
            Assert.True(code == 1, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Contains("translated-equals-native FAILED", stdout);
            Assert.Contains("differs from native", stdout);
            Assert.Matches(@"vcpu0 rflags|vcpu0 r[a-z0-9]+ ", stdout);
            Assert.Contains("shrunk program:", stdout);
            Assert.Matches(@"ffffffff802[0-9a-f]{5}  \S+", stdout);
            var replay = Regex.Match(stdout, @"^replay: harness (props .*--replay ""\((\d+),(\d+),(\d+)\)"")$", RegexOptions.Multiline);
            Assert.True(replay.Success, $"no replay line:\n{stdout}");

            // JUnit: one failing test case per property run, the shrunk program in the failure.
            var doc = XDocument.Load(junit);
            var suite = doc.Root!.Element("testsuite")!;
            Assert.Equal("1", suite.Attribute("failures")!.Value);
            var failure = suite.Element("testcase")!.Element("failure")!;
            Assert.Contains("shrunk program", failure.Value);

            // The printed line, as a user pastes it, fails again with the same shrunk program.
            string[] args = Regex.Matches(replay.Groups[1].Value, @"""[^""]*""|\S+").Select(m => m.Value.Trim('"')).ToArray();
            var again = HarnessCli.Run(Timeout, args);
            Assert.True(again.Code == 1, $"the replay exited {again.Code}\n{again.Stderr}");
            Assert.Equal(Program(stdout), Program(again.Stdout));
        });

    private static string Program(string stdout)
    {
        int a = stdout.IndexOf("shrunk program:", StringComparison.Ordinal), b = stdout.IndexOf("replay:", a, StringComparison.Ordinal);
        return stdout[a..b];
    }

    [Fact]
    public void ACorrectTranslatorPassesWithExit0AndAJunitReport() => WithJunit(junit =>
        {
            var (code, stdout, stderr) = HarnessCli.Run(Timeout, "props", "--property", "scratch-on-stack,precise-state", "--max-test", "15", "--junit", junit);
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Contains("passed", stdout);
            Assert.Contains("props: scratch-on-stack:", stderr); // progress lines when stderr is not a terminal
            var suite = XDocument.Load(junit).Root!.Element("testsuite")!;
            Assert.Equal("2", suite.Attribute("tests")!.Value);
            Assert.Equal("0", suite.Attribute("failures")!.Value);
        });

    [Fact]
    public void SeedsReportHowReliablyATwinIsFound()
    {
        var (code, stdout, stderr) = HarnessCli.Run(Timeout, "props", "--planted", "scratch-in-per-cpu-cell", "--seeds", "3", "--max-test", "20");
        Assert.True(code == 0, $"exit {code}\n{stderr}");
        Assert.Matches(@"scratch-on-stack\s+│\s+default\s+│\s+3/3", stdout);
    }
}
