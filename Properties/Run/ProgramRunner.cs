using Harness.Dbt;
using Harness.Dbt.Clients;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Properties.Generators;

namespace Harness.Properties.Run;

/// <summary>What the host does at one of vCPU 0's instruction boundaries during a run.</summary>
public enum HostAction
{
    /// <summary>Raise the probe vector (<see cref="ProgramBuilder.ProbeVector"/>): delivered at the first boundary with interrupts on (raised later if an earlier probe is still pending).</summary>
    Probe,
    /// <summary>A cache flush: switchoff with wipe, then switchon (at the first safe point from here).</summary>
    Flush,
    /// <summary>
    /// A cache flush while the probe's handler runs (its frame, holding the interrupted RIP, live on
    /// the stack): at the first safe point with the probe vector in service, given up after
    /// <see cref="ProgramRunner.HandlerWait"/> boundaries.
    /// </summary>
    FlushInProbe,
    SwitchOff,
    SwitchOn,
}

/// <summary>A host action at vCPU 0's retired-instruction count At (or the first boundary after it where it can be done).</summary>
public readonly record struct HostEvent(long At, HostAction Action)
{
    public override string ToString() => $"{Action.ToString().ToLowerInvariant()} at instruction {At}";
}

/// <summary>How one run of a generated program is made.</summary>
public sealed record RunSpec
{
    /// <summary>off (native), default or no-callret.</summary>
    public string Configuration { get; init; } = "off";
    public bool Prof { get; init; }
    /// <summary>The DBT's options (a planted bug, DropChainingPatch; null: the defaults); CallRet, Kernel and Clients are set from the spec.</summary>
    public DbtOptions? Options { get; init; }
    /// <summary>Record every guest store (needs the seams: <see cref="Seams.Points"/>).</summary>
    public bool RecordStores { get; init; }
    /// <summary>Record vCPU 0's RIP at every instruction boundary (one host event per instruction: slow, for short programs).</summary>
    public bool Trace { get; init; }
    /// <summary>Record the state at every exception a guest instruction raises (<see cref="FaultState"/>), per vCPU.</summary>
    public bool RecordFaults { get; init; }
    /// <summary>The host's plan: probes, flushes, switches at vCPU 0's instruction counts (the worker waits for every probe).</summary>
    public IReadOnlyList<HostEvent> Events { get; init; } = [];
    public long Quantum { get; init; } = 97;
    /// <summary>The instruction budget (any vCPU): a run that exceeds it ends with InstructionLimit.</summary>
    public long MaxInstructions { get; init; } = 20_000_000;

    public bool Translated => Configuration != "off";
    public override string ToString() => (Translated ? $"{Configuration}{(Prof ? "+prof" : "")}" : "native") + (Events.Count > 0 ? $" ({string.Join(", ", Events)})" : "");
}

/// <summary>
/// A vCPU's state where an instruction's exception passes control to its handler: the vector, the
/// faulting instruction's native RIP (a code-cache address mapped back), the GPRs, RFLAGS and CR2.
/// </summary>
public sealed record FaultState(int Vector, ulong Rip, ulong[] Gprs, ulong Rflags, ulong Cr2);

/// <summary>A traced boundary of vCPU 0: its retired count, RIP, and what code is there (a rule's name, a stub, "native").</summary>
public readonly record struct TracePoint(long Retired, ulong Rip, string Kind);

/// <summary>What a run left: how it ended, the data region (private pages, shared page), the console, the DBT's statistics, the stores, the trace.</summary>
public sealed record RunOutcome(RunResult Result, byte[] Data, string Console, DbtStats? Stats, IReadOnlyList<(int Vcpu, ulong Address, PointKind Kind)>? Stores,
    IReadOnlyList<(ulong Start, ulong End)> Exempt, IReadOnlyList<TracePoint>? Trace, IReadOnlyList<FaultState>[]? Faults, ProfCounts? Prof)
{
    /// <summary>The region compared: the done flags, every private page and the shared page.</summary>
    public const ulong DataStart = Layout.Data, DataBytes = Layout.Shared + 0x1000 - Layout.Data;

    public ulong Word(ulong va) => BitConverter.ToUInt64(Data, (int)(va - DataStart));

    /// <summary>Whether a translated run may store at va where native code does not (the DBT's own data).</summary>
    public bool IsExempt(ulong va) => Exempt.Any(r => va >= r.Start && va < r.End);

    /// <summary>The most instructions any vCPU retired.</summary>
    public long MaxRetired => Result.Vcpus.Count == 0 ? 0 : Result.Vcpus.Max(v => v.Instructions);

    /// <summary>
    /// A budget for another run of the same program derived from this one's length: translation adds
    /// stubs, lookups and counters, and spin-waits stretch with the other vCPUs' work (over 900
    /// generated programs, 1..4 vCPUs, default, no-callret+prof and unchained no-callret+prof: median
    /// 3.0x, 99th percentile 8.1x, max 8.9x native), so twice the worst; a translator bug that runs
    /// away (a chaining patch into the middle of the cache) then ends soon with InstructionLimit
    /// instead of executing garbage to the 20M default.
    /// </summary>
    public long Budget => 16 * MaxRetired + 20_000;
}

/// <summary>Runs generated programs natively or under the DBT on a fresh machine each time (deterministic control).</summary>
public static unsafe class ProgramRunner
{
    /// <summary>Host time one run may take before it is cancelled (a hang in the host, not the guest: the instruction budget ends guest runaways).</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>How many of vCPU 0's boundaries a FlushInProbe waits for the probe's handler.</summary>
    public const long HandlerWait = 400;

    /// <summary>
    /// Guest RAM of a run: the program's code, data and stacks end near 2.6 MiB, the code cache's
    /// reserved region is the top 8 MiB. Not less than 32 MiB: glibc's malloc serves smaller blocks
    /// from its heap once its mmap threshold has adapted, and calloc then zeroes them eagerly (16 MiB:
    /// 6.4-7.0 ms per native+translated case instead of 4.8, measured); above it, fresh pages are
    /// mapped lazily and only the touched ones cost anything.
    /// </summary>
    public const ulong MemoryBytes = 64UL << 20;

    public static RunOutcome Run(GuestProgram p, RunSpec spec)
    {
        using var run = Prepare(p, spec);
        using var cancel = new CancellationTokenSource(Timeout);
        return run.Collect(run.Machine.Run(cancel.Token, entry: p.Image.Entry));
    }

    /// <summary>
    /// A machine with the program loaded and the spec's DBT, plan and recorders attached, not yet
    /// run: for a caller that owns the run (a Coyote scenario passes its control and console; the
    /// spec's own deterministic control is used when control is null). Run it from the image's
    /// entry, then <see cref="PreparedRun.Collect"/> the outcome.
    /// </summary>
    public static PreparedRun Prepare(GuestProgram p, RunSpec spec, ExecutionControl? control = null, MemoryStream? console = null)
    {
        console ??= new MemoryStream();
        if (spec.RecordStores && control is not null)
            throw new ArgumentException("recording stores needs the runner's own deterministic control", nameof(control));
        control ??= spec.RecordStores ? new StoreRecorder(spec.Quantum) : new Deterministic(spec.Quantum);
        if (spec.RecordStores && !Seams.Points)
            throw new InvalidOperationException($"recording stores needs the scheduling points: set the AppContext switch {Seams.PointsSwitch} before any machine type is used");
        var m = new Harness.Smp.Machine(new MachineOptions
        {
            Vcpus = p.Vcpus, MemoryBytes = MemoryBytes, ReservedBytes = 8UL << 20, Control = control,
            MaxInstructions = spec.MaxInstructions, Console = console,
        });
        var image = p.Image;
        image.Load(m);
        long probes = spec.Events.Count(e => e.Action == HostAction.Probe);
        if (probes > 0) m.Memory.WriteU64(Layout.Private(0) + Layout.ProbesExpected - Harness.Smp.Boot.BootLayout.KernelAlias, (ulong)probes);
        Dbt.KernelDbt? dbt = null;
        if (spec.Translated)
        {
            var options = spec.Options ?? DbtOptions.Default;
            var clients = spec.Prof ? [.. options.Clients.Where(c => c != Prof.ClientName), Prof.ClientName] : options.Clients;
            dbt = Dbt.KernelDbt.Attach(m, options.As(spec.Configuration) with
            {
                Kernel = image.Kernel,
                Clients = clients,
            });
        }
        var trace = spec.Trace ? new List<(long, ulong, bool, bool)>() : null;
        List<FaultState>[]? faults = null;
        if (spec.RecordFaults)
        {
            var lists = faults = Enumerable.Range(0, p.Vcpus).Select(_ => new List<FaultState>()).ToArray();
            m.Attach(new HookAgent
            {
                OnEventDelivering = (v, vector, raised, rip) =>
                {
                    if (!raised) return;
                    ulong native = m.OriginOf(rip) is { } o ? o.NativeRip : rip;
                    var gprs = new ulong[16];
                    for (int g = 0; g < 16; g++) gprs[g] = v.Gpr(g);
                    lists[v.Index].Add(new FaultState(vector, native, gprs, v.Rflags, v.S->Cr2));
                },
            });
        }
        if (spec.Events.Count > 0 || trace is not null) InstallPlan(m, dbt, spec.Events, trace);
        return new PreparedRun(m, dbt, console, control, trace, faults);
    }

    /// <summary>A prepared machine (<see cref="Prepare"/>); disposing it frees the machine.</summary>
    public sealed class PreparedRun : IDisposable
    {
        private readonly MemoryStream console;
        private readonly ExecutionControl control;
        private readonly List<(long, ulong, bool, bool)>? trace;
        private readonly List<FaultState>[]? faults;

        internal PreparedRun(Harness.Smp.Machine machine, Dbt.KernelDbt? dbt, MemoryStream console, ExecutionControl control,
            List<(long, ulong, bool, bool)>? trace, List<FaultState>[]? faults)
        {
            Machine = machine;
            Dbt = dbt;
            this.console = console;
            this.control = control;
            this.trace = trace;
            this.faults = faults;
        }

        public Harness.Smp.Machine Machine { get; }
        public Dbt.KernelDbt? Dbt { get; }

        /// <summary>What the finished run left (call once the machine has stopped).</summary>
        public RunOutcome Collect(RunResult r)
        {
            var m = Machine;
            var dbt = Dbt;
            var data = m.Memory.Span(RunOutcome.DataStart - Harness.Smp.Boot.BootLayout.KernelAlias, (int)RunOutcome.DataBytes).ToArray();
            // What a translated run may write that native code does not: the DBT's own per-CPU words
            // (tx-nextpc-loc, the jumptable pointer), each vCPU's jumptable (the level-2 routine moves
            // the entry it hits to the front of its group) and the clients' counters.
            var exempt = new List<(ulong Start, ulong End)>();
            if (dbt is not null)
            {
                foreach (var v in m.Vcpus)
                {
                    ulong gs = v.S->GsBase;
                    exempt.Add((gs + dbt.Cache.PerCpu.TxNextPcLoc, gs + dbt.Cache.PerCpu.TxNextPcLoc + 8));
                    exempt.Add((gs + dbt.Cache.PerCpu.JumpTablePtr, gs + dbt.Cache.PerCpu.JumpTablePtr + 8));
                    if (v.Started && dbt.Cache.Contains(gs + dbt.Cache.PerCpu.JumpTablePtr))
                    {
                        ulong table = dbt.Cache.ReadU64(gs + dbt.Cache.PerCpu.JumpTablePtr);
                        exempt.Add((table, table + Harness.Dbt.Indirect.JumpTable.Bytes));
                    }
                }
                foreach (var (_, counter) in dbt.ClientCounters) exempt.Add((counter.Address, counter.Address + 8));
            }
            List<TracePoint>? points = null;
            if (trace is not null)
            {
                var blocks = dbt?.Translator.Blocks.ToArray() ?? [];
                // Where each native instruction's translation starts (a native boundary whatever the rule).
                var starts = blocks.SelectMany(b => b.Sources.Select(x => b.CacheStart + x.Offset)).ToHashSet();
                // In an sti shadow is a kind of its own (the boundary where no interrupt may come between), and
                // so are each rule's boundaries inside its translation where interrupts are on: there a frame
                // can hold a code-cache address that is no native boundary and must still map back.
                points = trace.Select(t => new TracePoint(t.Item1, t.Item2, t.Item3 ? "sti shadow" : Kind(Classify(dbt, t.Item2), t.Item4 && !starts.Contains(t.Item2)))).ToList();
            }
            return new RunOutcome(r, data, System.Text.Encoding.ASCII.GetString(console.ToArray()), dbt?.Stats, (control as StoreRecorder)?.Stores, exempt, points, faults,
                dbt?.Client<Prof>()?.Read());
        }

        public void Dispose() => Machine.Dispose();
    }

    /// <summary>
    /// The host plan on vCPU 0's thread: each event at its count, a switch retried at the next
    /// boundary until vCPU 0 is at a safe point; with a trace, an event at every boundary.
    /// </summary>
    private static void InstallPlan(Harness.Smp.Machine m, Dbt.KernelDbt? dbt, IReadOnlyList<HostEvent> events, List<(long, ulong, bool, bool)>? trace)
    {
        var plan = new Queue<HostEvent>(events.OrderBy(e => e.At));
        HookAgent? agent = null;
        agent = new HookAgent { OnHostEvent = v =>
        {
            long now = v.Retired;
            trace?.Add((now, v.Rip, v.InInterruptShadow, (v.Rflags & Rflags.IF) != 0));
            bool blocked = false;
            while (!blocked && plan.TryPeek(out var e) && e.At <= now)
            {
                bool done = e.Action switch
                {
                    HostAction.Probe => Raise(v),
                    HostAction.Flush => dbt?.TrySwitchAtHost(v, off: true, wipe: true, on: true) ?? true,
                    HostAction.FlushInProbe => now > e.At + HandlerWait
                        || v.Apic.InService(ProgramBuilder.ProbeVector) && (dbt?.TrySwitchAtHost(v, off: true, wipe: true, on: true) ?? true),
                    HostAction.SwitchOff => dbt?.TrySwitchAtHost(v, off: true, wipe: false, on: false) ?? true,
                    HostAction.SwitchOn => dbt?.TrySwitchAtHost(v, off: false, wipe: false, on: true) ?? true,
                    _ => true,
                };
                if (done) plan.Dequeue(); else blocked = true;
            }
            m.ScheduleHostEvent(agent!, trace is not null || blocked ? now + 1 : plan.TryPeek(out var next) ? Math.Max(now + 1, next.At) : long.MaxValue);
        } };
        m.Attach(agent);
        m.ScheduleHostEvent(agent, trace is not null ? 0 : plan.TryPeek(out var first) ? first.At : long.MaxValue);
    }

    // A probe still pending from an earlier event would swallow this one (the IRR holds one bit per
    // vector): it is raised at the first boundary after that one is delivered.
    private static bool Raise(Vcpu v)
    {
        if (v.Apic.IsPending(ProgramBuilder.ProbeVector)) return false;
        v.Apic.Raise(ProgramBuilder.ProbeVector, v.Retired);
        return true;
    }

    private static string Kind(string code, bool interruptsOn) =>
        interruptsOn && code is not ("native" or "identity" or "identity-end" or "direct-jcc" or "direct-jmp") ? code + " (interrupts on)" : code;

    /// <summary>What code a vCPU is in at rip: "native", a stub of the cache, an entry path, or the rule that emitted the instruction.</summary>
    private static string Classify(Dbt.KernelDbt? dbt, ulong rip)
    {
        if (dbt is null) return "native";
        var r = dbt.RegionAt(rip);
        return r.Kind switch
        {
            CodeKind.Native => "native",
            CodeKind.ExitStubPopfq => "exit stub: popfq",
            CodeKind.ExitStubJmp => "exit stub: jmp",
            CodeKind.Level2Routine => "level-2 routine",
            CodeKind.EdgeStub => "edge stub",
            CodeKind.DrkStub => "drk stub",
            CodeKind.EntryPath => "entry path",
            CodeKind.Rule => r.Rule!,
            _ => "unknown",
        };
    }

    /// <summary>Deterministic control that also records every guest store and atomic (the scheduling points' addresses).</summary>
    private sealed class StoreRecorder(long quantum) : Deterministic(quantum)
    {
        public readonly List<(int, ulong, PointKind)> Stores = [];

        public override void Point(Vcpu vcpu, PointKind kind, ulong address)
        {
            if (kind is PointKind.Store or PointKind.Atomic) Stores.Add((vcpu.Index, address, kind));
        }
    }
}
