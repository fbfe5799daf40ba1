using Harness.Dbt.Reports;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Dbt.Tests;

/// <summary>The whole-kernel translation report (<see cref="WholeImageTranslation"/>) stays within sane bounds.</summary>
public class ReportTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void WholeKernelTranslationIsReportedWithinSaneBounds(string config)
    {
        var elf = File.ReadAllBytes(KernelSupport.KernelPath);
        var r = WholeImageTranslation.Translate(elf, "kernel.elf", KernelTests.Config(config));
        output.WriteLine($"{config}: {r.Functions} functions ({r.FunctionsTranslated} translated), {r.Gates} gates, {r.Blocks} blocks ({r.EntryBlocks} entry), " +
                         $"{r.NativeInstructions} native insns, {r.NativeBytes} native bytes -> {r.CacheBytes} cache bytes (x{r.Expansion:F2}), " +
                         $"{r.EdgeStubs} edge stubs ({r.EdgesToTranslatedCode} to translated code, {r.CallOutStubs} call-outs), coverage {r.Coverage:P1} of {r.FunctionBytes} function bytes " +
                         $"(text {r.TextBytes}), duplication x{r.Duplication:F2}, {r.ExceptionTableEntries} exception-table entries");
        output.WriteLine(string.Join(", ", r.RuleCounts.Select(kv => $"{kv.Key}={kv.Value}")));
        foreach (var (where, why) in r.Untranslatable) output.WriteLine($"untranslatable: {where}: {why}");

        Assert.Equal(config, r.Configuration);
        Assert.True(r.Functions > 50, $"{r.Functions} functions");
        Assert.Equal(256, r.Gates);
        // The only native code the translator refuses is the kernel's own vmcall (dbt_hypercall: the DBT's call-out instruction).
        Assert.All(r.Untranslatable, u => Assert.Contains("vmcall", u.Why));
        Assert.True(r.FunctionsTranslated == r.Functions, $"{r.Functions - r.FunctionsTranslated} functions without a translation");
        Assert.True(r.Coverage > 0.85, $"coverage {r.Coverage:P1}");
        Assert.True(r.Expansion is > 1.0 and < 2.5, $"expansion {r.Expansion:F2}");
        Assert.True(r.Duplication is >= 1.0 and < 4.0, $"duplication {r.Duplication:F2}");
        Assert.True(r.EdgeStubs > r.Blocks / 2 && r.EdgesToTranslatedCode > 0);
        Assert.True(r.ExceptionTableEntries >= 3, $"{r.ExceptionTableEntries} exception-table registrations");
        Assert.Equal(r.NativeInstructions, r.RuleCounts.Values.Sum());
        Assert.True(r.RuleCounts.GetValueOrDefault("identity") > r.NativeInstructions / 2);
        Assert.True(r.RuleCounts.ContainsKey("iretq") && r.RuleCounts.ContainsKey("wrmsr") && r.RuleCounts.ContainsKey(config == "default" ? "indirect-call" : "no-callret-ret"));
    }
}
