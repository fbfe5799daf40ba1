using System.Globalization;
using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Dbt.Tests;

/// <summary>`harness run --client prof [--compare] [--stats]`: the per-workload table (the paper's Table 3) and its argument errors.</summary>
public class ProfCliTests(ITestOutputHelper output)
{
    private static (int Code, string Stdout, string Stderr) Harness(params string[] args) => global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(3), args);

    /// <summary>The cells of the Table 3 row whose first cell is name (the results summary before it has rows of the same names).</summary>
    private static string[] Row(string stderr, string name) =>
        stderr[stderr.IndexOf("(the paper's Table 3)", StringComparison.Ordinal)..].Split('\n').Select(l => l.Split('│').Select(c => c.Trim()).ToArray())
            .First(c => c.Length > 2 && c[1] == name)[2..^1];

    private static long N(string cell) => long.Parse(cell, NumberStyles.AllowThousands, CultureInfo.InvariantCulture);

    [Fact]
    public void CompareClientProfPrintsTable3ForBothConfigurationsSideBySide()
    {
        var (code, stdout, stderr) = Harness("run", "--compare", "--client", "prof", "--workload", "null_syscall,read1", "--vcpus", "1", "--exec", "deterministic");
        output.WriteLine(stderr);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        // stdout is the guest console of both runs, one after the other.
        Assert.Equal(2, stdout.Split('\n').Count(l => l.StartsWith("workload null_syscall exit=0", StringComparison.Ordinal)));
        Assert.Contains("per workload (the paper's Table 3), prof: default vs no-callret", stderr);
        foreach (var header in new[] { "guest insns", "indirect", "dispatcher", "L1 hits", "L2 hits", "no-callret" })
            Assert.Contains(header, stderr);
        Assert.DoesNotContain("host ms", stderr);

        // Pairs of columns: insns, indirect, dispatcher entries, L1, L2; default first.
        var row = Row(stderr, "null_syscall");
        Assert.Equal(10, row.Length);
        long insnsDefault = N(row[0]), indirectDefault = N(row[2]), indirectNoCallRet = N(row[3]);
        Assert.True(insnsDefault > 2000 * 10, $"guest insns {insnsDefault}");
        Assert.True(indirectDefault >= 2000, "each of the 2000 syscalls dispatches through the syscall table");
        Assert.True(indirectNoCallRet > 2 * indirectDefault, $"no-callret {indirectNoCallRet} vs default {indirectDefault}: every ret is an indirect branch");
        Assert.All(row[6..], c => Assert.EndsWith("%", c));
        Assert.True(double.Parse(row[6].TrimEnd('%'), CultureInfo.InvariantCulture) > 90, "level-1 hit rate of a syscall loop");
        foreach (var name in new[] { "boot", "read1", "total" }) Assert.Equal(10, Row(stderr, name).Length);
        Assert.True(N(Row(stderr, "total")[0]) > insnsDefault);
    }

    [Fact]
    public void StatsAddsBlocksAndHostTimeAndJsonCarriesTheRows()
    {
        var (code, _, stderr) = Harness("run", "--dbt", "no-callret", "--client", "prof", "--workload", "null_syscall", "--vcpus", "1", "--stats", "text");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("per workload (the paper's Table 3), prof: no-callret", stderr);
        Assert.Contains("blocks", stderr);
        Assert.Contains("host ms", stderr);
        Assert.Contains("prof: instructions=", stderr);
        Assert.Equal(7, Row(stderr, "null_syscall").Length);

        var json = Harness("run", "--compare", "--client", "prof", "--workload", "null_syscall", "--vcpus", "1", "--stats", "json");
        Assert.True(json.Code == 0, $"exit {json.Code}: {json.Stderr}");
        using var doc = JsonDocument.Parse(json.Stderr);
        var configs = doc.RootElement.GetProperty("configurations").EnumerateArray().ToList();
        Assert.Equal(["default", "no-callret"], configs.Select(c => c.GetProperty("configuration").GetString()));
        foreach (var c in configs)
        {
            var w = c.GetProperty("workloads").EnumerateArray().Single(x => x.GetProperty("name").GetString() == "null_syscall");
            Assert.True(w.GetProperty("guestInstructions").GetInt64() > 0);
            Assert.True(w.GetProperty("indirectBranches").GetInt64() >= 2000);
        }
    }

    [Theory]
    [InlineData("no client named 'nope'", "run", "--dbt", "default", "--client", "nope")]
    [InlineData("give --dbt default or --dbt no-callret", "run", "--client", "prof")]
    [InlineData("cannot be combined with --dbt off", "run", "--compare", "--dbt", "off")]
    [InlineData("given more than once", "run", "--dbt", "default", "--client", "prof,prof")]
    public void BadClientArgumentsExit2WithAClearMessage(string message, params string[] args)
    {
        var (code, stdout, stderr) = Harness(args);
        Assert.True(code == 2, $"exit {code}; stderr: {stderr}");
        Assert.Contains(message, stderr);
        Assert.Equal("", stdout);
        if (message.Contains("nope")) Assert.Contains("prof", stderr); // the clients that exist
    }
}
