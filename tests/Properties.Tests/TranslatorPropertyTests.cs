using Xunit;

namespace Harness.Properties.Tests;

/// <summary>
/// The properties against the correct translator, as CI runs them on every change: one row per
/// property and setting, FsCheck from a fixed run seed (reproducible CI; `harness props` explores
/// fresh seeds), a case budget that keeps this assembly well under 3 minutes on 2 cores
/// (docs/properties.md). A failure prints the shrunk program as assembly, the diff, and the seed
/// that replays it (`harness props --property P --dbt C [--prof] --replay "(seed,gamma,size)"`).
/// </summary>
public class TranslatorPropertyTests
{
    public static readonly ReplaySeed Seed = new(20261208, 11400714819323198485);

    public static TheoryData<string, string, bool, int> Rows => new()
    {
        { "translated-equals-native", "default", false, 200 },
        { "translated-equals-native", "no-callret", false, 120 },
        { "translated-equals-native", "default", true, 80 },
        { "translated-equals-native", "no-callret", true, 60 },
        { "precise-state", "default", false, 120 },
        { "precise-state", "no-callret", false, 80 },
        { "scratch-on-stack", "default", false, 120 },
        { "scratch-on-stack", "default", true, 60 },
        { "tx-nextpc-restore", "default", false, 60 },
        { "tx-nextpc-restore", "no-callret", true, 40 },
        { "chained-equals-unchained", "default", false, 100 },
        { "flush-equals-fresh", "default", false, 100 },
        { "flush-equals-fresh", "no-callret", true, 60 },
        { "switch-equals-native", "default", false, 60 },
        { "switch-equals-native", "no-callret", true, 40 },
        // The DRK-style baseline: interrupts through the dispatcher, frames made native.
        { "translated-equals-native", "drk", false, 100 },
        { "precise-state", "drk", false, 60 },
        { "flush-equals-fresh", "drk", false, 60 },
        { "switch-equals-native", "drk", false, 40 },
    };

    [Theory]
    [MemberData(nameof(Rows))]
    public void TheCorrectTranslatorHolds(string property, string configuration, bool prof, int cases)
    {
        var setting = new Setting(configuration, prof);
        var r = PropertyRunner.Run(Catalog.Property(property), setting, new CheckOptions { MaxTest = cases, Replay = Seed });
        Assert.True(r.Passed, $"{property} ({setting}) failed at case {r.Tests}: {r.Failure}\nshrunk program:\n{r.Shrunk}\n" +
                              $"replay: harness props --property {property} --dbt {configuration}{(prof ? " --prof" : "")} --replay \"{r.CaseSeed}\"");
        Assert.Equal(cases, r.Tests);
    }
}
