using System.Text.RegularExpressions;
using Xunit;

namespace Harness.Dbt.Tests;

/// <summary>`harness bench dbt`: argument errors and the shape of a --quick run's output (the built CLI, as a process).</summary>
public class BenchCommandTests
{
    private static (int Code, string Stdout, string Stderr) Harness(params string[] args) => global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromSeconds(120), args);

    [Theory]
    [InlineData("--vcpus", "0", "--vcpus must be between 1 and")]
    [InlineData("--vcpus", "abc", "--vcpus")]
    [InlineData("--workload", "null_syscall,bogus", "'bogus' is not a measured workload")]
    [InlineData("--kernel", "/nonexistent/kernel.elf", "kernel image not found: /nonexistent/kernel.elf")]
    [InlineData("--frobnicate", null, "--frobnicate")]
    public void BadArgumentsExit2WithAMessage(string option, string? value, string message)
    {
        var (code, stdout, stderr) = Harness(value is null ? ["bench", "dbt", option] : ["bench", "dbt", option, value]);
        Assert.True(code == 2, $"exit {code}; stderr: {stderr}");
        Assert.Contains(message, stderr);
        Assert.Equal("", stdout);
    }

    [Theory]
    [InlineData("--repeat", "0", "--repeat must be between 1 and 20")]
    [InlineData("--iterations", "0", "--iterations must be between 1 and")]
    [InlineData("--iterations", "-3", "--iterations")]
    public void BenchComputeBadArgumentsExit2WithAMessage(string option, string value, string message)
    {
        var (code, stdout, stderr) = Harness("bench", "compute", option, value);
        Assert.True(code == 2, $"exit {code}; stderr: {stderr}");
        Assert.Contains(message, stderr);
        Assert.Equal("", stdout);
    }

    /// <summary>`bench compute --quick`: every run checked against the host's checksums, the table and the goals.</summary>
    [Fact]
    public void BenchComputeQuickRunPrintsTheRunsAndTheGoals()
    {
        var (code, stdout, stderr) = Harness("bench", "compute", "--quick");
        Assert.True(code == 0, $"exit {code}; stderr: {stderr}\nstdout: {stdout}");
        Assert.Contains("QUICK", stdout);
        const string Bar = "[│|]";
        foreach (var run in new[] { "interpreted, 1 vCPU", "compiled, 1 vCPU, first run", "compiled, 2 vCPUs", "native work" })
            Assert.Matches(new Regex($@"{Bar} {Regex.Escape(run)}"), stdout);
        // Exact instruction counts: the interpreted and the compiled run of work(N) retire the same instructions.
        var counts = Regex.Matches(stdout, $@"{Bar} (interpreted, 1 vCPU|compiled, 1 vCPU, first run)\s+{Bar}\s+([\d,]+) {Bar}");
        Assert.Equal(2, counts.Count);
        Assert.Equal(counts[0].Groups[2].Value, counts[1].Groups[2].Value);
        foreach (var goal in new[] { "whole run, compiled", "steady state, compiled", "2 vCPUs vs 1" })
            Assert.Contains(goal, stdout);
    }

    [Fact]
    public void BenchWithoutASubcommandExits2PointingAtItsHelp()
    {
        var (code, _, stderr) = Harness("bench");
        Assert.True(code == 2, $"exit {code}; stderr: {stderr}");
        Assert.Contains("harness bench --help", stderr);
    }

    [Fact]
    public void QuickRunPrintsTheTablesAndTheGoals()
    {
        var (code, stdout, stderr) = Harness("bench", "dbt", "--quick", "--workload", "null_syscall", "--kernel", KernelSupport.KernelPath);
        Assert.True(code == 0, $"exit {code}; stderr: {stderr}\nstdout: {stdout}");
        Assert.Contains("QUICK", stdout);
        Assert.Contains("bench: [", stderr); // progress, one line per step when stderr is not a terminal

        // The per-workload table: native, default and its ratio, no-callret and its ratio, entries; then the geometric mean.
        // Spectre draws with box characters or, without a Unicode console encoding, ASCII.
        const string Bar = "[│|]";
        var row = Regex.Match(stdout, $@"{Bar} null_syscall\s+{Bar}\s+([\d,]+) {Bar}\s+([\d,]+) {Bar}\s+([\d.]+) {Bar}\s+([\d,]+) {Bar}\s+([\d.]+) {Bar}");
        Assert.True(row.Success, stdout);
        long native = long.Parse(row.Groups[1].Value.Replace(",", "")), dflt = long.Parse(row.Groups[2].Value.Replace(",", ""));
        long noCallRet = long.Parse(row.Groups[4].Value.Replace(",", ""));
        Assert.True(native > 0 && dflt >= native && noCallRet > dflt, row.Value);
        Assert.Equal((double)dflt / native, double.Parse(row.Groups[3].Value), 3);
        Assert.Contains("geometric mean", stdout);

        // Host time: one row per configuration with exact instruction counts next to the wall times.
        foreach (var c in new[] { "off", "default", "no-callret" })
            Assert.Matches(new Regex($@"{Bar} {c}\s+{Bar}\s+[\d,]+ {Bar}\s+[\d,]+ ms {Bar}"), stdout);
        Assert.Contains("whole-kernel translation", stdout);
        Assert.Matches(new Regex($@"functions translated\s+{Bar}\s+\d+ of \d+"), stdout);
        foreach (var goal in new[] { "default overhead, every workload", "geometric mean", "no-callret visibly worse", "dispatcher entries, steady state", "host time" })
            Assert.Contains(goal, stdout);
    }

    [Fact]
    public void ABadKernelIsNamedAndRefusedBeforeTheFirstBoot()
    {
        string dir = Directory.CreateTempSubdirectory("harness-bench-").FullName;
        try
        {
            string empty = Path.Combine(dir, "empty.elf");
            File.WriteAllBytes(empty, []);
            var e = Harness("bench", "dbt", "--kernel", empty);
            Assert.Equal(2, e.Code);
            Assert.Contains(empty, e.Stderr);
            Assert.DoesNotContain("kernel.elf", e.Stderr);

            // A bootable image that is not the guest kernel: refused at once (it used to run every step first).
            string sample = Path.Combine(dir, "not-a-kernel.elf");
            File.Copy(Path.Combine(Support.RepoRoot, "guest", "build", "samples", "compute.elf"), sample);
            var n = Harness("bench", "dbt", "--kernel", sample);
            Assert.Equal(2, n.Code);
            Assert.Contains(sample, n.Stderr);
            Assert.DoesNotContain("bench: [", n.Stderr);

            var d = Harness("bench", "dbt", "--kernel", dir);
            Assert.Equal(2, d.Code);
            Assert.Contains("is a directory", d.Stderr);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
