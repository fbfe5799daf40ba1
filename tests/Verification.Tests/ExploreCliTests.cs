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
    [InlineData("program --shard 3/2", "need 1 <= i <= N")]
    [InlineData("kernel --snapshot-marker no-such-line-ever", "never reached the snapshot point")]
    [InlineData("program --shard half", "'half' is not i/N")]
    [InlineData("--merge /nonexistent/shards", "no such directory")]
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

    /// <summary>
    /// Three shard processes, run at once, explore exactly the iterations of one run with three
    /// times the budget: the merge reports the bug at the same iteration of the whole exploration
    /// as the unsharded run, and its trace replays; a missing shard is refused.
    /// </summary>
    [Fact]
    public void ShardsRunInParallelMergeIntoTheUnshardedRun()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"shards-{Guid.NewGuid():N}");
        try
        {
            string[] common = ["explore", "program", "--programs", "100", "--planted", "jmp-flips-carry"];
            var whole = HarnessCli.Run(Timeout, [.. common, "--iterations", "30", "--traces", Path.Combine(dir, "whole")]);
            Assert.True(whole.Code == 1, whole.Stdout + whole.Stderr);
            int expected = int.Parse(System.Text.RegularExpressions.Regex.Match(whole.Stdout, @"bug found in iteration (\d+)").Groups[1].Value);

            var shards = Enumerable.Range(1, 3).Select(i => Task.Run(() =>
                HarnessCli.Run(Timeout, [.. common, "--iterations", "10", "--shard", $"{i}/3", "--traces", Path.Combine(dir, "shards", $"s{i}")]))).ToArray();
            Task.WaitAll(shards);
            Assert.Contains(shards, t => t.Result.Code == 1);
            var merged = HarnessCli.Run(Timeout, "explore", "--merge", Path.Combine(dir, "shards"));
            Assert.True(merged.Code == 1, merged.Stdout + merged.Stderr);
            Assert.Contains($"the first in the whole exploration, at iteration {expected} ", merged.Stdout);
            string trace = System.Text.RegularExpressions.Regex.Match(merged.Stdout, $@"iteration {expected} \(shard \d\): harness replay (\S+)").Groups[1].Value;
            var replay = HarnessCli.Run(Timeout, "replay", trace);
            Assert.True(replay.Code == 0, replay.Stdout + replay.Stderr);

            File.Delete(Directory.GetFiles(Path.Combine(dir, "shards", "s2"), "shard-2-of-3.json").Single());
            var missing = HarnessCli.Run(Timeout, "explore", "--merge", Path.Combine(dir, "shards"));
            Assert.True(missing.Code == 2, missing.Stdout + missing.Stderr);
            Assert.Contains("1 of 3 shards missing: 2", missing.Stderr);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void CleanShardsMergeToTheWholeBudget()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"shards-{Guid.NewGuid():N}");
        try
        {
            for (int i = 1; i <= 2; i++)
            {
                var r = HarnessCli.Run(Timeout, "explore", "program", "--programs", "20", "--iterations", "15", "--shard", $"{i}/2", "--traces", dir);
                Assert.True(r.Code == 0, r.Stdout + r.Stderr);
            }
            var merged = HarnessCli.Run(Timeout, "explore", "--merge", dir);
            Assert.True(merged.Code == 0, merged.Stdout + merged.Stderr);
            Assert.Contains("clean", merged.Stdout);
            Assert.Matches(@"│\s+2 │\s+30 │", merged.Stdout);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    private static string Chromium =>
        new[] { "chromium", "chromium-browser" }.Select(c => Environment.GetEnvironmentVariable("PATH")!.Split(':').Select(d => Path.Combine(d, c)).FirstOrDefault(File.Exists))
            .FirstOrDefault(p => p is not null)
        ?? throw new InvalidOperationException("headless Chromium is not installed: run bash ci/ensure-chromium.sh (apt-get install chromium)");

    /// <summary>
    /// `harness report` on a saved trace: the HTML page renders in a real browser (headless
    /// Chromium, from the distribution's packages) to a non-empty screenshot, and its DOM holds the
    /// failure, one lane per vCPU, disassembled code mapped back to native, and the replay command;
    /// the text form says the same for a terminal.
    /// </summary>
    [Fact]
    public void TheHtmlReportRendersInABrowserWithTheFailureLanesAndReplayCommand()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"report-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = HarnessCli.Run(Timeout, "explore", "program", "--programs", "100", "--iterations", "10",
                "--planted", "counter-clobbers-flags", "--traces", dir);
            Assert.True(code == 1, stdout + stderr);
            string trace = Directory.GetFiles(dir, "*.trace.json").Single();
            string html = Path.Combine(dir, "bug.html");
            var report = HarnessCli.Run(Timeout, "report", trace, "-o", html);
            Assert.True(report.Code == 0, report.Stdout + report.Stderr);

            string png = Path.Combine(dir, "bug.png");
            var shot = HarnessCli.Exec(Chromium, ["--headless", "--no-sandbox", "--disable-gpu", $"--screenshot={png}", "--window-size=1400,1000", new Uri(html).AbsoluteUri], Timeout);
            Assert.True(File.Exists(png), $"no screenshot (exit {shot.Code}): {shot.Stderr}");
            Assert.True(new FileInfo(png).Length > 20_000, $"the screenshot is {new FileInfo(png).Length} bytes: an empty page?");
            var dom = HarnessCli.Exec(Chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", new Uri(html).AbsoluteUri], Timeout).Stdout;
            Assert.Contains("harness report: program(", dom);
            Assert.Contains("the translated run differs from the native run", dom);
            Assert.Contains("<th>vCPU 0</th><th>vCPU 1</th>", dom);
            Assert.Matches("cache 0x[0-9a-f]+ = native 0x[0-9a-f]+", dom);
            Assert.Contains($"harness replay {trace}", dom);

            var text = HarnessCli.Run(Timeout, "report", trace, "--format", "text");
            Assert.True(text.Code == 0, text.Stderr);
            Assert.Contains("the replay reproduced the failure", text.Stdout);
            Assert.Matches(@"#\d+ +vCPU [01]  (load|store|atomic|interrupt|exception)", text.Stdout);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// The point of the tool: a translator author's own rule, in an assembly the harness has never
    /// seen (built here with the project file of docs/writing-rules.md), explored like the built-in
    /// ones. The rule was meant to mark every `not` and forgot to emit the instruction itself (no
    /// e.Identity()); the program scenario finds it, and the trace replays with the assembly loaded
    /// again from the trace's options.
    /// </summary>
    [Fact]
    public void AnAuthorsOwnRuleLoadedWithRulesIsExploredAndItsBugFound()
    {
        string guide = File.ReadAllText(Path.Combine(HarnessCli.RepoRoot, "docs", "writing-rules.md")).ReplaceLineEndings("\n");
        int at = guide.IndexOf("<!-- rules-project -->", StringComparison.Ordinal);
        int start = guide.IndexOf("```xml\n", at, StringComparison.Ordinal) + 7;
        string project = guide[start..guide.IndexOf("\n```", start, StringComparison.Ordinal)];
        const string source = """
            using Harness.Dbt.Translate;
            namespace AuthorRules;
            /// <summary>Meant to mark every not; the author forgot e.Identity().</summary>
            public sealed class MarkNotRule : Rule
            {
                public override string Name => "mark-not";
                public override Flow Emit(Emitter e) => Flow.Continue;
            }
            """;
        string dir = Directory.CreateTempSubdirectory("harness-author-rules-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "AuthorRules.csproj"), project);
            File.WriteAllText(Path.Combine(dir, "AuthorRules.cs"), source);
            string outDir = Path.Combine(dir, "out");
            _ = HarnessCli.Dll;   // the harness's projects built first; the author's assembly does not rebuild them
            var build = HarnessCli.Exec("dotnet", ["build", Path.Combine(dir, "AuthorRules.csproj"), "-c", "Release", "-nologo", "-v", "q",
                $"-p:HarnessRoot={HarnessCli.RepoRoot}", "-p:BuildProjectReferences=false", "-o", outDir], Timeout);
            Assert.True(build.Code == 0, $"building the author's rules failed:\n{build.Stdout}\n{build.Stderr}");
            string dll = Path.Combine(outDir, "AuthorRules.dll");

            var (code, stdout, stderr) = HarnessCli.Run(Timeout, "explore", "program", "--programs", "100", "--iterations", "300",
                "--rules", dll, "--rule", "not=mark-not", "--traces", Path.Combine(dir, "traces"));
            Assert.True(code == 1, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Contains("the translated run differs from the native run", stdout);
            string trace = Directory.GetFiles(Path.Combine(dir, "traces"), "*.trace.json").Single();
            var replay = HarnessCli.Run(Timeout, "replay", trace);
            Assert.True(replay.Code == 0, replay.Stdout + replay.Stderr);

            var clean = HarnessCli.Run(Timeout, "explore", "program", "--programs", "100", "--iterations", "100", "--rules", dll, "--traces", Path.Combine(dir, "traces"));
            Assert.True(clean.Code == 0, "loading the assembly without --rule changes nothing: " + clean.Stdout + clean.Stderr);
            var bad = HarnessCli.Run(Timeout, "explore", "program", "--rule", "not=no-such-rule");
            Assert.True(bad.Code == 2 && bad.Stderr.Contains("no rule named 'no-such-rule'"), bad.Stderr);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>A time budget ends the exploration at the next iteration with its summary (Coyote's own timeout would ignore --iterations).</summary>
    [Fact]
    public void ATimeBudgetEndsTheExplorationEarlyWithItsSummary()
    {
        var (code, stdout, stderr) = HarnessCli.Run(Timeout, "explore", "program", "--programs", "10", "--iterations", "1000000", "--time-budget", "3s", "--traces", Path.GetTempPath());
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        var m = System.Text.RegularExpressions.Regex.Match(stdout, @"│ clean  │\s+([\d,]+) │");
        Assert.True(m.Success, stdout);
        long n = long.Parse(m.Groups[1].Value.Replace(",", ""));
        Assert.InRange(n, 1, 999_999);
    }

    /// <summary>
    /// `harness catalogue` on one bug and one checker: exit 0 with the find, its replay and the
    /// correct translator's clean run when the checker finds it; exit 1 naming it as missed when the
    /// budget is too small for the checker (scratch-in-per-cpu-cell is beyond the program scenario).
    /// </summary>
    [Fact]
    public void TheCatalogueReportsFindsAndMisses()
    {
        var found = HarnessCli.Run(Timeout, "catalogue", "--bug", "fixup-not-registered", "--checker", "program", "--seeds", "1", "--iterations", "40");
        Assert.True(found.Code == 0, found.Stdout + found.Stderr);
        Assert.Matches(@"│ fixup-not-registered\s+│ program\s+│\s+1/1 │\s+5 / 5 iterations │[^│]+│ yes", found.Stdout);
        Assert.Contains("1 of 1 planted bugs found by a generic checker", found.Stdout);
        Assert.Contains("correct translator: 1 of 1 budgets clean", found.Stdout);

        var missed = HarnessCli.Run(Timeout, "catalogue", "--bug", "scratch-in-per-cpu-cell", "--checker", "program", "--seeds", "1", "--iterations", "10");
        Assert.True(missed.Code == 1, missed.Stdout + missed.Stderr);
        Assert.Contains("missed: scratch-in-per-cpu-cell", missed.Stdout);

        var bad = HarnessCli.Run(Timeout, "catalogue", "--checker", "fuzzing");
        Assert.True(bad.Code == 2 && bad.Stderr.Contains("unknown checker 'fuzzing'"), bad.Stderr);
    }

    [Fact]
    public void AMalformedTraceIsRefusedWithExit2NamingTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"trace-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, "{\"Settings\": {}, \"Steps\": []}");
        try
        {
            foreach (var command in new[] { "replay", "report" })
            {
                var (code, _, stderr) = HarnessCli.Run(Timeout, command, path);
                Assert.True(code == 2, $"{command}: exit {code}: {stderr}");
                Assert.Contains(path, stderr);
                Assert.Contains("not a harness trace", stderr);
            }
        }
        finally { File.Delete(path); }
    }
}
