using Harness.Dbt;
using Harness.Dbt.Clients;
using Harness.Machine;
using Harness.Machine.Control;
using Harness.Machine.Cpu;
using Harness.Properties.Generators;

namespace Harness.Properties.Run;

/// <summary>How one run of a generated program is made.</summary>
public sealed record RunSpec
{
    /// <summary>off (native), default or no-callret.</summary>
    public string Configuration { get; init; } = "off";
    public bool Prof { get; init; }
    /// <summary>The DBT's options (a planted bug, DropChainingPatch, a main-pool limit); CallRet, Kernel and Clients are set from the spec.</summary>
    public DbtOptions Options { get; init; } = DbtOptions.Default;
    /// <summary>Record every guest store (needs the seams: <see cref="Seams.Points"/>).</summary>
    public bool RecordStores { get; init; }
    public long Quantum { get; init; } = 97;
    public long MaxInstructions { get; init; } = 20_000_000;

    public bool Translated => Configuration != "off";
    public override string ToString() => Translated ? $"{Configuration}{(Prof ? "+prof" : "")}" : "native";
}

/// <summary>What a run left: how it ended, the data region (private pages, shared page), the console, the DBT's statistics, the stores.</summary>
public sealed record RunOutcome(RunResult Result, byte[] Data, string Console, DbtStats? Stats, IReadOnlyList<(int Vcpu, ulong Address, PointKind Kind)>? Stores,
    IReadOnlySet<ulong> Exempt)
{
    /// <summary>The region compared: the done flags, every private page and the shared page.</summary>
    public const ulong DataStart = Layout.Data, DataBytes = Layout.Shared + 0x1000 - Layout.Data;

    public ulong Word(ulong va) => BitConverter.ToUInt64(Data, (int)(va - DataStart));
}

/// <summary>Runs generated programs natively or under the DBT on a fresh machine each time (deterministic control).</summary>
public static unsafe class ProgramRunner
{
    public static RunOutcome Run(GuestProgram p, RunSpec spec)
    {
        var console = new MemoryStream();
        var control = spec.RecordStores ? new StoreRecorder(spec.Quantum) : new Deterministic(spec.Quantum);
        if (spec.RecordStores && !Seams.Points)
            throw new InvalidOperationException($"recording stores needs the scheduling points: set the AppContext switch {Seams.PointsSwitch} before any machine type is used");
        using var m = new Harness.Machine.Machine(new MachineOptions
        {
            Vcpus = p.Vcpus, MemoryBytes = 64UL << 20, ReservedBytes = 8UL << 20, Control = control,
            MaxInstructions = spec.MaxInstructions, Console = console,
        });
        var image = p.Image;
        image.Load(m);
        Dbt.Dbt? dbt = null;
        if (spec.Translated)
        {
            var clients = spec.Prof ? [.. spec.Options.Clients.Where(c => c != Prof.ClientName), Prof.ClientName] : spec.Options.Clients;
            dbt = Dbt.Dbt.Attach(m, spec.Options with
            {
                CallRet = spec.Configuration == "default",
                Kernel = Dbt.Kernel.KernelImage.FromSymbols(image.Symbols),
                Clients = clients,
            });
        }
        var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var r = m.Run(cancel.Token, entry: image.Entry);
        var data = m.Memory.Span(RunOutcome.DataStart - Harness.Machine.Boot.BootLayout.KernelAlias, (int)RunOutcome.DataBytes).ToArray();
        // What a translated run may write that native code does not: the DBT's own per-CPU words
        // (tx-nextpc-loc, the jumptable pointer) and its clients' counters.
        var exempt = new HashSet<ulong>();
        if (dbt is not null)
        {
            foreach (var v in m.Vcpus)
            {
                ulong gs = v.S->GsBase;
                exempt.Add(gs + dbt.Cache.PerCpu.TxNextPcLoc);
                exempt.Add(gs + dbt.Cache.PerCpu.JumpTablePtr);
            }
            foreach (var (_, counter) in dbt.ClientCounters) exempt.Add(counter.Address);
        }
        return new RunOutcome(r, data, System.Text.Encoding.ASCII.GetString(console.ToArray()), dbt?.Stats, (control as StoreRecorder)?.Stores, exempt);
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
