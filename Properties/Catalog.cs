using Harness.Dbt;
using Harness.Dbt.Verify;
using Harness.Machine.Cpu;
using Harness.Properties.Generators;
using Harness.Properties.Run;

namespace Harness.Properties;

/// <summary>One generated case: a program and the property's own knob (the flush property's pool size, in bytes).</summary>
public sealed record Case(GuestProgram Program, int Knob)
{
    public override string ToString() => Knob == 0 ? Program.ToString() : $"; knob {Knob}\n{Program}";
}

/// <summary>What a property is checked under: the configuration, prof, and the DBT's options (a planted bug).</summary>
public sealed record Setting(string Configuration = "default", bool Prof = false, DbtOptions? Options = null)
{
    public DbtOptions Dbt => Options ?? DbtOptions.Default;
}

/// <summary>
/// A translator property: which programs it generates, and the check of one case (null: holds; else
/// the failure, with the register/flag/memory diff). Each has a planted twin in <see cref="Catalog.Planted"/>.
/// </summary>
public sealed record PropertyDef(string Name, string Description, GenOptions Generation, Func<Case, Setting, string?> Check,
    Func<Rng, int>? Knob = null, Func<int, IEnumerable<int>>? ShrinkKnob = null);

/// <summary>A planted bug (a DbtOptions switch) and the property that must catch it.</summary>
public sealed record PlantedBug(string Name, string Description, string Property, Func<DbtOptions, DbtOptions> Apply, bool Prof = false);

/// <summary>The translator's properties (../shared/DESIGN.md, Properties) and their planted twins.</summary>
public static class Catalog
{
    private static RunOutcome Native(Case c, bool recordStores = false) =>
        ProgramRunner.Run(c.Program, new RunSpec { RecordStores = recordStores });

    private static RunOutcome Translated(Case c, Setting s, DbtOptions? options = null, bool recordStores = false) =>
        ProgramRunner.Run(c.Program, new RunSpec { Configuration = s.Configuration, Prof = s.Prof, Options = options ?? s.Dbt, RecordStores = recordStores });

    /// <summary>The native run must itself have ended by the guest's exit 0: a program that does not is a generator bug, reported as such.</summary>
    private static string? NativeFailed(RunOutcome n) =>
        n.Result.Reason == StopReason.Exited && n.Result.ExitStatus == 0 ? null
            : $"the native run did not exit 0 ({n.Result.Reason}: {n.Result.Message}): a generator bug, not the translator's";

    private static string? Equal(Case c, RunOutcome a, string an, RunOutcome b, string bn) =>
        StateDiff.Compare(c.Program, a, an, b, bn) is { } d ? $"{bn} differs from {an}:\n{d}" : null;

    public static readonly IReadOnlyList<PropertyDef> Properties =
    [
        new("translated-equals-native",
            "random programs (every shape, faults with fixups, timer interrupts, 1..4 vCPUs) end translated with the native registers, flags, memory and console",
            GenOptions.Default with { MaxVcpus = 4 },
            (c, s) =>
            {
                var n = Native(c);
                return NativeFailed(n) ?? Equal(c, n, "native", Translated(c, s), s.Configuration + (s.Prof ? "+prof" : ""));
            }),
        new("precise-state",
            "at every dispatcher entry the translated state (GPRs, RIP mapped back, flags, RSP, the live stack) equals a lockstep native reference's (Dbt/Verify/StateCheck) on generated programs; 1 vCPU, no interrupts or faults (the check's scope)",
            GenOptions.Default with { Interrupts = false, Faults = false },
            (c, s) => PreciseState(c, s)),
        new("scratch-on-stack",
            "translated execution stores nowhere native execution does not, except the stack and the DBT's own per-CPU words (tx-nextpc-loc, jumptable) and its clients' counters",
            GenOptions.Default,
            (c, s) => ScratchOnStack(c, s)),
        new("tx-nextpc-restore",
            "with timer ticks at generated instruction counts (each handler makes an indirect call: a jumptable miss that overwrites tx-nextpc-loc), the translated run ends as the native one",
            GenOptions.Default with { Faults = false },
            (c, s) =>
            {
                var p = c.Program.Timer is null ? c with { Program = c.Program with { Timer = new TimerPlan(c.Knob % 700 + 1, 37 + c.Knob % 61, 4) } } : c;
                var n = Native(p);
                return NativeFailed(n) ?? Equal(p, n, "native", Translated(p, s), s.Configuration);
            },
            Knob: r => r.Range(1, 100_000), ShrinkKnob: k => k > 1 ? [k / 2] : []),
        new("chained-equals-unchained",
            "the translated run with every edge chained ends as the run where no edge is ever chained (each branch through the dispatcher)",
            GenOptions.Default with { MaxVcpus = 2 },
            (c, s) =>
            {
                var unchained = Translated(c, s, s.Dbt with { DropChainingPatch = true });
                if (unchained.Result.Reason != StopReason.Exited) return $"the unchained run did not exit ({unchained.Result.Reason}: {unchained.Result.Message})";
                return Equal(c, unchained, "unchained", Translated(c, s), "chained");
            }),
        new("flush-equals-fresh",
            "with the code cache capped at a generated size (so it fills and is flushed: switchoff, wipe, switchon while calls and interrupts are live), the run ends as native",
            GenOptions.Default with { MaxVcpus = 2, MaxPieces = 16 },
            (c, s) => FlushEqualsFresh(c, s),
            Knob: r => 1024 * r.Range(4, 12), ShrinkKnob: k => k < 12 * 1024 ? [k + 1024] : []),
    ];

    public static readonly IReadOnlyList<PlantedBug> Planted =
    [
        new("fixup-not-registered", "the exception-table registration skips plain loads (mov r, m)", "translated-equals-native",
            o => o with { PlantedFixupNotRegisteredForLoads = true }),
        new("counter-clobbers-flags", "prof's counter snippets add without saving the flags", "translated-equals-native",
            o => o with { PlantedCounterClobbersFlags = true }, Prof: true),
        new("jmp-flips-carry", "every translated direct jmp flips CF (results rarely see it; the flags at the next dispatcher entry do)", "precise-state",
            o => o with { PlantedJmpFlipsCarry = true }),
        new("scratch-in-per-cpu-cell", "the register-form lookup parks its scratch register in a per-CPU cell (gs:[64])", "scratch-on-stack",
            o => o with { PlantedScratchInPerCpuCell = true }),
        new("no-tx-nextpc-restore", "iretq does not restore tx-nextpc-loc from the frame's redundant slot", "tx-nextpc-restore",
            o => o with { PlantedNoTxNextPcRestore = true }),
        new("chain-relative-to-stub", "the chaining patch's rel32 is computed from the edge stub instead of the patch site", "chained-equals-unchained",
            o => o with { PlantedChainRelativeToStub = true }),
        new("switchoff-keeps-stacks", "switchoff leaves code-cache return addresses on the stacks it should rewrite", "flush-equals-fresh",
            o => o with { PlantedSwitchoffKeepsStacks = true }),
    ];

    public static PropertyDef Property(string name) => Properties.FirstOrDefault(p => p.Name == name)
        ?? throw new ArgumentException($"no property named '{name}' (properties: {string.Join(", ", Properties.Select(p => p.Name))})");

    public static PlantedBug Bug(string name) => Planted.FirstOrDefault(p => p.Name == name)
        ?? throw new ArgumentException($"no planted bug named '{name}' (planted: {string.Join(", ", Planted.Select(p => p.Name))})");

    private static string? PreciseState(Case c, Setting s)
    {
        var p = c.Program;
        if (p.Vcpus != 1 || p.Timer is not null || p.Faults) return null; // outside the check's scope: vacuous
        using var m = Machine(p);
        using var reference = Machine(p);
        var options = s.Dbt with { CallRet = s.Configuration == "default", Kernel = Dbt.Kernel.KernelImage.FromSymbols(p.Image.Symbols) };
        var check = StateCheck.Attach(m, reference, options, new StackRange(Layout.StackTop(0) - Layout.StackBytes, Layout.StackTop(0)));
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var r = check.Run(cancel.Token, entry: p.Image.Entry);
        if (check.Failure is { } f) return $"the state check failed after {check.EntriesChecked} dispatcher entries:\n{f}";
        if (r.Reason != StopReason.Exited || r.ExitStatus != 0) return $"the translated run under the state check ended {r.Reason}: {r.Message}";
        return null;
    }

    private static Harness.Machine.Machine Machine(GuestProgram p)
    {
        var m = new Harness.Machine.Machine(new Harness.Machine.MachineOptions
        {
            Vcpus = 1, MemoryBytes = 64UL << 20, ReservedBytes = 8UL << 20, Control = new Harness.Machine.Control.Deterministic(97),
            MaxInstructions = 20_000_000,
        });
        p.Image.Load(m);
        return m;
    }

    private static string? ScratchOnStack(Case c, Setting s)
    {
        var n = Native(c, recordStores: true);
        if (NativeFailed(n) is { } bad) return bad;
        var t = Translated(c, s, recordStores: true);
        var nativeStores = n.Stores!.Select(x => x.Address).ToHashSet();
        bool Stack(ulong a) => Enumerable.Range(0, c.Program.Vcpus).Any(k => a < Layout.StackTop(k) && a >= Layout.StackTop(k) - Layout.StackBytes);
        var stray = t.Stores!.Where(x => !nativeStores.Contains(x.Address) && !Stack(x.Address) && !t.Exempt.Contains(x.Address)).ToList();
        if (stray.Count == 0) return Equal(c, n, "native", t, s.Configuration);
        var lines = stray.GroupBy(x => x.Address).Take(8).Select(g => $"  vCPU {g.First().Vcpu} stored to 0x{g.Key:x} {g.Count()} time(s) ({g.First().Kind}); native code never stores there");
        return $"translated code stored outside the stack and the DBT's own words ({stray.Count} stores to {stray.Select(x => x.Address).Distinct().Count()} address(es)):\n{string.Join('\n', lines)}";
    }

    private static string? FlushEqualsFresh(Case c, Setting s)
    {
        var n = Native(c);
        if (NativeFailed(n) is { } bad) return bad;
        var t = Translated(c, s, s.Dbt with { MainPoolLimit = (ulong)c.Knob });
        // A working set that does not fit the pool even right after a flush is the run's honest
        // outcome for that size, not a property failure: the case says nothing.
        if (t.Result.Reason == StopReason.HostError && t.Result.Message.Contains("too small", StringComparison.Ordinal)) return null;
        return Equal(c, n, "native", t, $"{s.Configuration}, {c.Knob / 1024} KiB pool, {t.Stats?.Flushes ?? 0} flush(es)");
    }
}
