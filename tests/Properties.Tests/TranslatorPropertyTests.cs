using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;

namespace Harness.Properties.Tests;

/// <summary>
/// The properties against the correct translator, as FsCheck properties CI runs on every change: a
/// fixed replay seed each (reproducible CI; `harness props` explores fresh seeds), a case budget that
/// keeps this assembly under 3 minutes on 2 cores (docs/properties.md). A failure prints the shrunk
/// program as assembly and the diff (the label), and `harness props --replay` reproduces it.
/// </summary>
public class TranslatorPropertyTests
{
    private static Property Holds(string name, string configuration = "default", bool prof = false)
    {
        var def = Catalog.Property(name);
        var setting = new Setting(configuration, prof);
        return Prop.ForAll(PropertyRunner.Cases(def, def.Generation), c =>
        {
            string? failure = PropertyRunner.Safe(def, c, setting);
            return (failure is null).Label(failure ?? "");
        });
    }

    private const string Seed = "(20261208,11400714819323198485)";

    [Property(MaxTest = 150, Replay = Seed)]
    public Property TranslatedEqualsNativeDefault() => Holds("translated-equals-native");

    [Property(MaxTest = 100, Replay = Seed)]
    public Property TranslatedEqualsNativeNoCallRet() => Holds("translated-equals-native", "no-callret");

    [Property(MaxTest = 60, Replay = Seed)]
    public Property TranslatedEqualsNativeWithProf() => Holds("translated-equals-native", prof: true);

    [Property(MaxTest = 40, Replay = Seed)]
    public Property TranslatedEqualsNativeNoCallRetWithProf() => Holds("translated-equals-native", "no-callret", prof: true);

    [Property(MaxTest = 100, Replay = Seed)]
    public Property PreciseState() => Holds("precise-state");

    [Property(MaxTest = 60, Replay = Seed)]
    public Property PreciseStateNoCallRet() => Holds("precise-state", "no-callret");

    [Property(MaxTest = 100, Replay = Seed)]
    public Property ScratchOnStack() => Holds("scratch-on-stack");

    [Property(MaxTest = 60, Replay = Seed)]
    public Property ScratchOnStackWithProf() => Holds("scratch-on-stack", prof: true);

    [Property(MaxTest = 40, Replay = Seed)]
    public Property TxNextPcRestore() => Holds("tx-nextpc-restore");

    [Property(MaxTest = 30, Replay = Seed)]
    public Property TxNextPcRestoreNoCallRet() => Holds("tx-nextpc-restore", "no-callret");

    [Property(MaxTest = 80, Replay = Seed)]
    public Property ChainedEqualsUnchained() => Holds("chained-equals-unchained");

    [Property(MaxTest = 80, Replay = Seed)]
    public Property FlushEqualsFresh() => Holds("flush-equals-fresh");

    [Property(MaxTest = 40, Replay = Seed)]
    public Property FlushEqualsFreshNoCallRet() => Holds("flush-equals-fresh", "no-callret");

    [Property(MaxTest = 40, Replay = Seed)]
    public Property SwitchEqualsNative() => Holds("switch-equals-native");

    [Property(MaxTest = 30, Replay = Seed)]
    public Property SwitchEqualsNativeNoCallRet() => Holds("switch-equals-native", "no-callret");
}
