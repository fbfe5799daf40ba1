using System.Text;
using Harness.Dbt;
using Harness.Dbt.Verify;
using Harness.Smp.Cpu;
using Harness.Properties.Generators;
using Harness.Properties.Run;

namespace Harness.Properties;

/// <summary>One generated case: a program and the property's own knob (where its host events go).</summary>
public sealed record Case(GuestProgram Program, int Knob)
{
    /// <summary>A shrink candidate (not a generated case): how the runner tells FsCheck's two kinds of calls apart.</summary>
    public bool IsShrink { get; init; }

    public override string ToString() => Knob == 0 ? Program.ToString() : $"; knob {Knob}\n{Program}";
}

/// <summary>What a property is checked under: the configuration, prof, and the DBT's options (a planted bug).</summary>
public sealed record Setting(string Configuration = "default", bool Prof = false, DbtOptions? Options = null)
{
    public DbtOptions Dbt => Options ?? DbtOptions.Default;

    public override string ToString() => Configuration + (Prof ? "+prof" : "");
}

/// <summary>
/// A translator property: which programs it generates, and the check of one case (null: holds; else
/// the failure, with the register/flag/memory diff). Each has a planted twin in <see cref="Catalog.Planted"/>.
/// </summary>
public sealed record PropertyDef(string Name, string Description, GenOptions Generation, Func<Case, Setting, string?> Check,
    Func<Rng, int>? Knob = null, Func<int, IEnumerable<int>>? ShrinkKnob = null);

/// <summary>A planted bug (a DbtOptions switch), the property that must catch it, and the setting it shows under (prof, the configuration).</summary>
public sealed record PlantedBug(string Name, string Description, string Property, Func<DbtOptions, DbtOptions> Apply, bool Prof = false, string Configuration = "default")
{
    public Setting Setting => new(Configuration, Prof, Apply(DbtOptions.Default));
}

/// <summary>The translator's properties (../shared/DESIGN.md, Properties) and their planted twins.</summary>
public static class Catalog
{
    private static RunOutcome Native(Case c, RunSpec? spec = null) => ProgramRunner.Run(c.Program, spec ?? new RunSpec());

    private static RunOutcome Translated(Case c, Setting s, RunOutcome reference, RunSpec? spec = null) =>
        ProgramRunner.Run(c.Program, (spec ?? new RunSpec()) with
        {
            Configuration = s.Configuration, Prof = s.Prof, Options = spec?.Options ?? s.Dbt, MaxInstructions = reference.Budget,
        });

    /// <summary>The native run must itself have ended by the guest's exit 0: a program that does not is a generator bug, reported as such.</summary>
    private static string? NativeFailed(RunOutcome n) =>
        n.Result.Reason == StopReason.Exited && n.Result.ExitStatus == 0 ? null
            : $"the native run did not exit 0 ({n.Result.Reason}: {n.Result.Message}): a generator bug, not the translator's";

    private static string? Equal(Case c, RunOutcome a, string an, RunOutcome b, string bn) =>
        StateDiff.Compare(c.Program, a, an, b, bn) is { } d ? $"{bn} differs from {an}:\n{d}{Ended(b)}" : null;

    // How a run that did not exit ended (the diff says "InstructionLimit"; the message says where).
    private static string Ended(RunOutcome o) => o.Result.Reason == StopReason.Exited ? "" : $"  ({o.Result.Reason}: {o.Result.Message})\n";

    public static readonly IReadOnlyList<PropertyDef> Properties =
    [
        new("translated-equals-native",
            "random programs (every shape, faults with fixups, timer interrupts, 1..4 vCPUs) end translated with the native registers, flags, memory and console",
            GenOptions.Default with { MaxVcpus = 4 },
            (c, s) =>
            {
                var n = Native(c);
                return NativeFailed(n) ?? Equal(c, n, "native", Translated(c, s, n), s.ToString());
            }),
        new("precise-state",
            "where translated code hands control to the dispatcher (every entry, against a lockstep native reference: Dbt/Verify/StateCheck, 1 vCPU without faults) "
            + "or to an exception handler (every fault: GPRs, RFLAGS, CR2 and the faulting RIP mapped back), the state is the native state at that instruction",
            GenOptions.Default with { Interrupts = false, MaxVcpus = 2 },
            PreciseState),
        new("scratch-on-stack",
            "translated execution stores nowhere native execution does not, except the stack and the DBT's own per-CPU words (tx-nextpc-loc, jumptable) and its clients' counters",
            GenOptions.Default,
            ScratchOnStack),
        new("tx-nextpc-restore",
            "a probe interrupt (whose handler makes an indirect call: a jumptable miss that overwrites tx-nextpc-loc) raised at each traced boundary in the exit stub, "
            + "a lookup, an entry path or another non-identity translation (up to 12 per case) leaves the run ending as the native one",
            GenOptions.Default with { Faults = false },
            TxNextPcRestore,
            Knob: r => r.Range(1, 1 << 20), ShrinkKnob: k => k > 1 ? [1] : []),
        new("chained-equals-unchained",
            "the translated run with every edge chained ends as the run where no edge is ever chained (each branch through the dispatcher)",
            GenOptions.Default with { MaxVcpus = 2 },
            (c, s) =>
            {
                var n = Native(c);
                if (NativeFailed(n) is { } bad) return bad;
                var unchained = Translated(c, s, n, new RunSpec { Options = s.Dbt with { DropChainingPatch = true } });
                if (unchained.Result.Reason != StopReason.Exited) return $"the unchained run did not exit ({unchained.Result.Reason}: {unchained.Result.Message})";
                return Equal(c, unchained, "unchained", Translated(c, s, unchained), "chained");
            }),
        new("flush-equals-fresh",
            "at 1..3 traced boundaries of vCPU 0 (stubs, lookups, entry paths, sti shadows, plain code) a probe interrupt and a cache flush (switchoff, wipe, switchon) there or while the probe's handler runs: the run ends as the fresh translated run with the same probes (and as native)",
            GenOptions.Default with { MaxVcpus = 2 },
            FlushEqualsFresh,
            Knob: r => r.Range(1, 1 << 20), ShrinkKnob: k => k > 1 ? [1] : []),
        new("switch-equals-native",
            "switchoff and switchon again at traced boundaries of vCPU 0 (in stubs, lookups and other non-identity translations as often as in plain code) leave the run ending as native",
            GenOptions.Default with { MaxVcpus = 2 },
            SwitchEqualsNative,
            Knob: r => r.Range(1, 1 << 20), ShrinkKnob: k => k > 1 ? [1] : []),
    ];

    public static readonly IReadOnlyList<PlantedBug> Planted =
    [
        new("fixup-not-registered", "the exception-table registration skips plain loads (mov r, m)", "translated-equals-native",
            o => o with { PlantedFixupNotRegisteredForLoads = true }),
        new("counter-clobbers-flags", "prof's counter snippets add without saving the flags", "translated-equals-native",
            o => o with { PlantedCounterClobbersFlags = true }, Prof: true),
        new("jmp-flips-carry", "every translated direct jmp flips CF (results rarely see it; the flags at the next dispatcher entry or fault do)", "precise-state",
            o => o with { PlantedJmpFlipsCarry = true }),
        new("scratch-in-per-cpu-cell", "the register-form lookup parks its scratch register in a per-CPU cell (gs:[64])", "scratch-on-stack",
            o => o with { PlantedScratchInPerCpuCell = true }),
        new("no-tx-nextpc-restore", "iretq does not restore tx-nextpc-loc from the frame's redundant slot", "tx-nextpc-restore",
            o => o with { PlantedNoTxNextPcRestore = true }),
        new("chain-relative-to-stub", "the chaining patch's rel32 is computed from the edge stub instead of the patch site", "chained-equals-unchained",
            o => o with { PlantedChainRelativeToStub = true }),
        new("switchoff-keeps-stacks", "switchoff leaves code-cache return addresses on the stacks it should rewrite", "flush-equals-fresh",
            o => o with { PlantedSwitchoffKeepsStacks = true }),
        new("stub-targets-ignored-at-safe-points", "a vCPU in the exit stub or an edge stub is a safe point whatever it goes to (a flush can resume it inside exception_fixup's scan); the hole the flush property found, kept as a twin",
            "flush-equals-fresh", o => o with { PlantedStubTargetsIgnoredAtSafePoints = true }),
        new("switch-in-interrupt-shadow", "a vCPU in an sti shadow is a safe point (resumed at a fresh block, prof's snippet opens a window between sti and hlt); found by flush-equals-fresh, kept as a twin",
            "flush-equals-fresh", o => o with { PlantedSwitchInInterruptShadow = true }, Prof: true),
        new("level2-return-not-recovered", "switchoff leaves an interrupt frame at the level-2 jumptable routine's final ret alone (after a wipe it returns through a stale tx; under no-callret, whose rets are lookups); found by flush-equals-fresh, kept as a twin",
            "flush-equals-fresh", o => o with { PlantedLevel2ReturnNotRecovered = true }, Configuration: "no-callret"),
        new("counted-jcc-taken-not-recovered", "a loop/jrcxz translation's taken branch has no recovery point (switchoff leaves a frame interrupted there in the old cache); found by flush-equals-fresh, kept as a twin",
            "flush-equals-fresh", o => o with { PlantedCountedJccTakenNotRecovered = true }),
        new("ret-imm-moved-with-interrupts", "no-callret's ret imm16 moves its return address before the lookup's cli (a frame half way through the ret has no native state); found by flush-equals-fresh, kept as a twin",
            "flush-equals-fresh", o => o with { PlantedRetImmMovedWithInterrupts = true }, Configuration: "no-callret"),
        new("exit-stub-recovery-keeps-flags", "a vCPU switched off at the exit stub's popfq resumes natively without popping the saved flags word", "switch-equals-native",
            o => o with { PlantedExitStubRecoveryKeepsFlags = true }),
    ];

    public static PropertyDef Property(string name) => Properties.FirstOrDefault(p => p.Name == name)
        ?? throw new ArgumentException($"no property named '{name}' (properties: {string.Join(", ", Properties.Select(p => p.Name))})");

    public static PlantedBug Bug(string name) => Planted.FirstOrDefault(p => p.Name == name)
        ?? throw new ArgumentException($"no planted bug named '{name}' (planted: {string.Join(", ", Planted.Select(p => p.Name))})");

    // ---- precise state -------------------------------------------------------------------------------

    private static string? PreciseState(Case c, Setting s)
    {
        var n = Native(c, new RunSpec { RecordFaults = true });
        if (NativeFailed(n) is { } bad) return bad;
        var t = Translated(c, s, n, new RunSpec { RecordFaults = true });
        if (CompareFaults(c.Program, n, t, s.ToString()) is { } f) return f;
        if (Equal(c, n, "native", t, s.ToString()) is { } e) return e;
        // The state check's scope is one vCPU without faults: it checks the program reduced to that
        // (the same pieces on vCPU 0, the faulting loads and stores left out), so every case gets it.
        var reduced = c.Program.Faults || c.Program.Vcpus > 1
            ? c.Program with { Vcpus = 1, Pieces = c.Program.Pieces.Select(x => x.WithoutFaults()).OfType<Piece>().ToArray() }
            : c.Program;
        if (DispatcherEntries(c with { Program = reduced }, s) is { } d)
            return reduced == c.Program ? d : $"(on the program reduced to vCPU 0 without its faulting accesses)\n{d}";
        return null;
    }

    private static readonly string[] gprNames = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

    /// <summary>The k-th fault of each vCPU in both runs: same vector, native RIP, GPRs, RFLAGS (RF masked) and CR2.</summary>
    private static string? CompareFaults(GuestProgram p, RunOutcome n, RunOutcome t, string name)
    {
        for (int v = 0; v < p.Vcpus; v++)
        {
            var a = n.Faults![v];
            var b = t.Faults![v];
            for (int k = 0; k < Math.Min(a.Count, b.Count); k++)
            {
                var (x, y) = (a[k], b[k]);
                var sb = new StringBuilder();
                void Row(string what, string l, string r) => sb.AppendLine($"  {what,-22} {l,-24} {r}");
                if (x.Vector != y.Vector) Row("vector", $"{x.Vector}", $"{y.Vector}");
                if (x.Rip != y.Rip) Row("rip (native)", $"{x.Rip:x16}", $"{y.Rip:x16}");
                for (int g = 0; g < 16; g++) if (x.Gprs[g] != y.Gprs[g]) Row(gprNames[g], $"{x.Gprs[g]:x16}", $"{y.Gprs[g]:x16}");
                ulong fx = x.Rflags & ~Rflags.RF, fy = y.Rflags & ~Rflags.RF;
                if (fx != fy) Row("rflags", StateDiff.Flags(fx), StateDiff.Flags(fy));
                if (x.Cr2 != y.Cr2) Row("cr2", $"{x.Cr2:x16}", $"{y.Cr2:x16}");
                if (sb.Length > 0)
                    return $"vCPU {v}'s fault {k + 1} of {a.Count} (#{x.Vector} at native 0x{x.Rip:x}) is delivered from a state that is not native:\n  {"",-22} {"native",-24} {name}\n{sb}";
            }
            if (a.Count != b.Count && t.Result.Reason == StopReason.Exited)
                return $"vCPU {v} took {a.Count} fault(s) natively but {b.Count} translated";
        }
        return null;
    }

    /// <summary>Dbt/Verify/StateCheck: every dispatcher entry against a lockstep native reference (1 vCPU, no interrupts, no faults).</summary>
    private static string? DispatcherEntries(Case c, Setting s)
    {
        var p = c.Program;
        using var m = StateCheckMachine(p);
        using var reference = StateCheckMachine(p);
        var options = s.Dbt.As(s.Configuration) with
        {
            Kernel = p.Image.Kernel,
            Clients = s.Prof ? ["prof"] : [],
        };
        var check = StateCheck.Attach(m, reference, options, new StackRange(Layout.StackTop(0) - Layout.StackBytes, Layout.StackTop(0)));
        using var cancel = new CancellationTokenSource(ProgramRunner.Timeout);
        var r = check.Run(cancel.Token, entry: p.Image.Entry);
        if (check.Failure is { } f) return $"the state check failed after {check.EntriesChecked} dispatcher entries:\n{f}";
        if (r.Reason != StopReason.Exited || r.ExitStatus != 0) return $"the translated run under the state check ended {r.Reason}: {r.Message}";
        return null;
    }

    private static Harness.Smp.Machine StateCheckMachine(GuestProgram p)
    {
        var m = new Harness.Smp.Machine(new Harness.Smp.MachineOptions
        {
            Vcpus = 1, MemoryBytes = ProgramRunner.MemoryBytes, ReservedBytes = 8UL << 20, Control = new Harness.Smp.Control.Deterministic(97),
            MaxInstructions = 20_000_000,
        });
        p.Image.Load(m);
        return m;
    }

    // ---- scratch on stack ----------------------------------------------------------------------------

    private static string? ScratchOnStack(Case c, Setting s)
    {
        var n = Native(c, new RunSpec { RecordStores = true });
        if (NativeFailed(n) is { } bad) return bad;
        var t = Translated(c, s, n, new RunSpec { RecordStores = true });
        var nativeStores = n.Stores!.Select(x => x.Address).ToHashSet();
        bool Stack(ulong a) => Enumerable.Range(0, c.Program.Vcpus).Any(k => a < Layout.StackTop(k) && a >= Layout.StackTop(k) - Layout.StackBytes);
        var stray = t.Stores!.Where(x => !nativeStores.Contains(x.Address) && !Stack(x.Address) && !t.IsExempt(x.Address)).ToList();
        if (stray.Count == 0) return Equal(c, n, "native", t, s.ToString());
        var lines = stray.GroupBy(x => x.Address).Take(8).Select(g => $"  vCPU {g.First().Vcpu} stored to 0x{g.Key:x} {g.Count()} time(s) ({g.First().Kind}); native code never stores there");
        return $"translated code stored outside the stack and the DBT's own words ({stray.Count} stores to {stray.Select(x => x.Address).Distinct().Count()} address(es)):\n{string.Join('\n', lines)}";
    }

    // ---- interrupts, flushes and switches at traced boundaries ----------------------------------------

    // Boundaries in these rules are ordinary instruction copies: an interrupt or a switch there is
    // what the other properties' timer ticks already do. Everything else (stubs, lookups, entry
    // paths, call and return translations, counter snippets) is where the design's windows are.
    private static readonly HashSet<string> plainKinds = ["native", "identity", "identity-end", "direct-jcc", "counted-jcc", "direct-jmp"];

    /// <summary>
    /// vCPU 0's boundaries in a translated run of the program, traced, as windows: the distinct
    /// non-plain cache addresses (first occurrence of each), then a sample of plain ones. The knob
    /// rotates which of them a case uses (at most max).
    /// </summary>
    private static (List<TracePoint> Windows, RunOutcome Traced) Windows(Case c, Setting s, RunOutcome n, int max, double plainShare)
    {
        var traced = Translated(c, s, n, new RunSpec { Trace = true });
        var trace = traced.Trace!;
        var special = trace.Where(t => !plainKinds.Contains(t.Kind)).DistinctBy(t => t.Rip).ToList();
        var plain = trace.Where(t => plainKinds.Contains(t.Kind)).ToList();
        int plainCount = Math.Min(plain.Count, (int)Math.Ceiling(max * plainShare));
        // Round-robin over the kinds (then over each kind's addresses), so a rare kind (the level-2
        // routine, an sti shadow) is as likely to be chosen as the lookups that fill most traces.
        var kinds = special.GroupBy(t => t.Kind).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => g.ToList()).ToList();
        var chosen = new List<TracePoint>();
        for (int i = 0; chosen.Count < max - plainCount && i < special.Count; i++)
        {
            var group = kinds[(c.Knob + i) % kinds.Count];
            var pick = group[(c.Knob / 7 + i / kinds.Count) % group.Count];
            if (!chosen.Contains(pick)) chosen.Add(pick);
        }
        for (int i = 0; i < plainCount; i++) chosen.Add(plain[(int)((ulong)(c.Knob + i * 7919L) % (ulong)plain.Count)]);
        return (chosen.OrderBy(t => t.Retired).ToList(), traced);
    }

    private static string? TxNextPcRestore(Case c, Setting s)
    {
        var probe = new RunSpec { Events = [new HostEvent(0, HostAction.Probe)] };
        var n = Native(c, probe);
        if (NativeFailed(n) is { } bad) return bad;
        var (windows, traced) = Windows(c, s, n, max: 12, plainShare: 0);
        if (traced.Result.Reason != StopReason.Exited) return Equal(c, n, "native", traced, s.ToString());
        foreach (var w in windows)
        {
            var t = Translated(c, s, n, new RunSpec { Events = [new HostEvent(w.Retired, HostAction.Probe)] });
            if (Equal(c, n, "native (probe at the start)", t, $"{s}, probe at instruction {w.Retired}") is { } diff)
                return $"a probe interrupt raised at vCPU 0's instruction {w.Retired} (0x{w.Rip:x}, in {w.Kind}):\n{diff}";
        }
        return null;
    }

    private static string? FlushEqualsFresh(Case c, Setting s)
    {
        var probes = new RunSpec { Events = [new HostEvent(0, HostAction.Probe)] };
        var n = Native(c, probes);
        if (NativeFailed(n) is { } bad) return bad;
        // 1..3 windows (traced boundaries in stubs, lookups, entry paths, sti shadows and plain code):
        // at each, a probe interrupt, and a flush a few instructions later, while the probe's frame
        // (its RIP the window's) is live on the stack or the handler is running; the flushes are tied
        // to what the program does there, so a failure survives shrinking. The reference is the fresh
        // translated run with the same probes (flush-then-run = fresh), itself checked against native.
        var (windows, _) = Windows(c, s, n, max: 1 + c.Knob % 3, plainShare: 0.34);
        var probeEvents = windows.Select(w => new HostEvent(w.Retired, HostAction.Probe)).ToList();
        var fresh = Translated(c, s, n, new RunSpec { Events = probeEvents });
        if (Equal(c, Native(c, new RunSpec { Events = probeEvents.Select(_ => new HostEvent(0, HostAction.Probe)).ToList() }), "native", fresh, s.ToString()) is { } d) return d;
        // Each window: a flush there (the vCPU's own state in that code), or one while the probe
        // raised there is being handled (its frame, holding a RIP in that code, live on the stack).
        bool inHandler = c.Knob / 3 % 2 == 1;
        var events = windows.SelectMany(w => inHandler
            ? new[] { new HostEvent(w.Retired, HostAction.Probe), new HostEvent(w.Retired, HostAction.FlushInProbe) }
            : new[] { new HostEvent(w.Retired, HostAction.Flush), new HostEvent(w.Retired, HostAction.Probe) }).ToList();
        var t = Translated(c, s, n, new RunSpec { Events = events });
        if (Equal(c, fresh, "fresh translated", t, $"{s}, flushes") is { } diff)
            return $"probes at vCPU 0's instructions {string.Join(", ", windows.Select(w => $"{w.Retired} (0x{w.Rip:x}, in {w.Kind})"))}, " +
                   $"each with a cache flush {(inHandler ? "while its handler runs" : "at the same boundary")} ({t.Stats?.Flushes ?? 0} done):\n{diff}";
        return null;
    }

    private static string? SwitchEqualsNative(Case c, Setting s)
    {
        var n = Native(c);
        if (NativeFailed(n) is { } bad) return bad;
        var (windows, traced) = Windows(c, s, n, max: 4, plainShare: 0.5);
        if (traced.Result.Reason != StopReason.Exited) return Equal(c, n, "native", traced, s.ToString());
        foreach (var w in windows)
        {
            // Off at the window, on again a generated distance later (in native code: the switchon
            // finds vCPU 0 wherever it is, possibly in a handler or a spin).
            long back = w.Retired + 1 + c.Knob % 200;
            var t = Translated(c, s, n, new RunSpec { Events = [new HostEvent(w.Retired, HostAction.SwitchOff), new HostEvent(back, HostAction.SwitchOn)] });
            if (Equal(c, n, "native", t, $"{s}, off at {w.Retired}, on at {back}") is { } diff)
                return $"switchoff at vCPU 0's instruction {w.Retired} (0x{w.Rip:x}, in {w.Kind}), switchon at {back} (switches done: {t.Stats?.SwitchOffs ?? 0} off, {t.Stats?.SwitchOns ?? 0} on):\n{diff}";
        }
        return null;
    }
}
