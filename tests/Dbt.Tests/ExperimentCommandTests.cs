using Xunit;

namespace Harness.Dbt.Tests;

/// <summary>`harness experiment`: a --quick run's files (results.csv rows, summary tables, plots) and bad input (the built CLI, as a process).</summary>
public class ExperimentCommandTests
{
    private static (int Code, string Stdout, string Stderr) Harness(params string[] args) => global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(3), args);

    [Fact]
    public void AQuickRunWritesItsRowsSummaryAndPlots()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"experiment-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = Harness("experiment", "--quick", "--out", dir);
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            var lines = File.ReadAllLines(Path.Combine(dir, "results.csv"));
            Assert.StartsWith("config,vcpus,workload,exec,rep,ok,guest_insns", lines[0]);
            // 3 configs x 2 vCPU counts x 2 workloads, one deterministic and one free run each, all ok,
            // plus a prof run per translated configuration and workload on 1 vCPU.
            Assert.Equal(24 + 4, lines.Length - 1);
            Assert.All(lines.Skip(1), l => Assert.Equal("1", l.Split(',')[5]));
            string summary = File.ReadAllText(Path.Combine(dir, "summary.md"));
            Assert.Matches(@"\| null_syscall \| 1 \| default \| \d+ \| 1\.\d\dx \|", summary);
            Assert.Contains("## Scaling", summary);
            // Table 3: under drk every null syscall enters the dispatcher once; under default almost none do.
            Assert.Matches(@"\| null_syscall \| drk \| 1\.\d\d \| [\d.]+ \| [\d.]+ % \| [\d.]+ % \| [\d.]+ \| [\d.]+ \| 1\.00 \|", summary);
            Assert.Matches(@"\| null_syscall \| default \| 0\.\d\d \| [\d.]+ \| [\d.]+ % \| [\d.]+ % \| [\d.]+ \| 0\.00 \| 0\.00 \|", summary);
            Assert.Contains("## System time, 2 vCPU(s)", summary);
            Assert.Contains("commit ", summary);
            foreach (var w in new[] { "null_syscall", "pipe_rtt" })
                foreach (var kind in new[] { "overhead", "throughput" })
                    Assert.True(new FileInfo(Path.Combine(dir, $"{kind}-{w}.png")).Length > 5_000, $"the {w} {kind} plot is missing or empty");

            // Exact counts are reproducible: a second run's deterministic rows have the same instruction counts.
            string again = dir + "-again";
            Assert.Equal(0, Harness("experiment", "--quick", "--out", again).Code);
            static IEnumerable<string> Counts(string d) => File.ReadAllLines(Path.Combine(d, "results.csv")).Skip(1)
                .Select(l => l.Split(',')).Where(f => f[3] == "deterministic").Select(f => string.Join(',', f[0..10]));
            Assert.Equal(Counts(dir), Counts(again));
            Directory.Delete(again, recursive: true);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>name:ARG reaches the program (its iteration count); fileserver-scaled and httpd-scaled give two workers or clients per vCPU.</summary>
    [Fact]
    public void AWorkloadArgumentReachesTheProgramAndTheScaledFileServerGrowsWithTheVcpus()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"experiment-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = Harness("experiment", "--configs", "native", "--vcpus", "1,2", "--workloads", "null_syscall:5000,fileserver-scaled,httpd-scaled",
                "--repeat", "1", "--out", dir);
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            var rows = File.ReadAllLines(Path.Combine(dir, "results.csv")).Skip(1).Select(l => l.Split(',')).Where(f => f[3] == "deterministic").ToList();
            Assert.All(rows.Where(f => f[2] == "null_syscall:5000"), f => Assert.Equal("5000", f[10]));
            Assert.Equal(["300", "600"], rows.Where(f => f[2] == "fileserver-scaled").Select(f => f[10]));
            Assert.Equal(["400", "800"], rows.Where(f => f[2] == "httpd-scaled").Select(f => f[10]));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("--configs drq", "unknown configuration 'drq'")]
    [InlineData("--configs native,fast", "unknown configuration 'fast'")]
    [InlineData("--vcpus 1,5", "'5' is not a vCPU count from 1 to 4")]
    [InlineData("--workloads null_syscall,bogus", "no workload 'bogus'")]
    [InlineData("--repeat 0", "--repeat must be between 1 and 100")]
    [InlineData("--out /proc/harness-experiment", "--out: /proc/harness-experiment")]
    public void BadInputExits2NamingIt(string args, string message)
    {
        var (code, _, stderr) = Harness(["experiment", "--quick", .. args.Split(' ')]);
        Assert.True(code == 2, $"exit {code}: {stderr}");
        Assert.Contains(message, stderr);
    }
}
