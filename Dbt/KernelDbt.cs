using Harness.Dbt.Cache;
using Harness.Dbt.Dispatch;
using Harness.Dbt.Translate;
using Harness.Smp;

namespace Harness.Dbt;

/// <summary>
/// The kernel DBT attached to a machine. After
/// <see cref="Attach"/>, every vCPU starts in the code cache — the BSP at the translation of its
/// entry point, each AP at the translation of its mailbox RIP — and stays there: direct branches
/// are chained, calls push code-cache return addresses, and indirect branches go through the
/// dispatcher (the vmcall host call-out).
/// </summary>
public sealed class KernelDbt : ICallOutTargets
{
    public readonly Machine Machine;
    public readonly CodeCache Cache;
    public readonly BlockTranslator Translator;
    public readonly EdgeTable Edges;
    public readonly Dispatcher Dispatcher;
    public readonly DbtOptions Options;
    public readonly DbtStats Stats;
    public readonly Kernel.KernelEntries Kernel;
    public readonly Kernel.ExceptionTables ExceptionTables;
    private readonly Clients.ClientSet? clients;

    /// <summary>The attached clients (<see cref="DbtOptions.Clients"/>), in order.</summary>
    public IReadOnlyList<Clients.Client> Clients => clients?.All ?? [];

    /// <summary>Every counter of every attached client, with the client's name (what reports print for clients they do not know).</summary>
    public IReadOnlyList<(string Client, Clients.Counter Counter)> ClientCounters => clients?.Counters ?? [];

    /// <summary>The attached client of type T, or null.</summary>
    public T? Client<T>() where T : Clients.Client => Clients.OfType<T>().FirstOrDefault();
    public readonly Kernel.Switch Switch;

    private KernelDbt(Machine machine, DbtOptions options)
    {
        Machine = machine;
        Options = options;
        Stats = new DbtStats(machine.Vcpus.Length);
        Cache = new CodeCache(machine, new PerCpu(options.PerCpuOffset), options.MainPoolLimit,
            plantedMoveToFrontWithInterrupts: options.PlantedLevel2MoveToFrontWithInterrupts);
        // In dependency order; the translator's call-outs reach the kernel entries and the switch,
        // built after it, through this object (ICallOutTargets).
        Edges = new EdgeTable(machine, Cache, options, Stats);
        ExceptionTables = new Kernel.ExceptionTables(machine, Cache, options.Kernel, options.ExceptionTableCapacity);
        Rulebook.Prepare(options);
        clients = global::Harness.Dbt.Clients.ClientSet.Create(machine, Cache, options, Stats);
        Translator = new BlockTranslator(Cache, Edges, options, Stats, this, clients, ExceptionTables);
        Kernel = new Kernel.KernelEntries(machine, Cache, Translator, Stats);
        Switch = new Kernel.Switch(machine, Cache, Translator, Edges, Kernel, ExceptionTables, Stats, options.Kernel, startOn: options.SwitchOnAt is null or 0, planted: options);
        Dispatcher = new Dispatcher(machine, Cache, Translator, Edges, Kernel, Switch, options, Stats);
        HostAgent = new Agent(this);
    }

    ulong? ICallOutTargets.Lidt(Vcpu v, ulong nativeRsp, Iced.Intel.Instruction ins) => Kernel.Lidt(v, nativeRsp, ins);
    ulong? ICallOutTargets.Sidt(Vcpu v, ulong nativeRsp, Iced.Intel.Instruction ins) => Kernel.Sidt(v, nativeRsp, ins);
    ulong? ICallOutTargets.Wrmsr(Vcpu v, ulong nativeRsp) => Kernel.WrmsrCallOut(v, nativeRsp);
    ulong? ICallOutTargets.Rdmsr(Vcpu v, ulong nativeRsp) => Kernel.RdmsrCallOut(v, nativeRsp);
    ulong? ICallOutTargets.DrkIretq(Vcpu v, ulong nativeRsp) => Kernel.IretqCallOut(v, nativeRsp);
    long ICallOutTargets.Hypercall(Vcpu v) => Switch.Hypercall(v);
    void ICallOutTargets.NativeFrame(Vcpu v, ulong frame, int vector) => Switch.NativeFrame(v, frame, vector);

    /// <summary>
    /// Attaches before <see cref="Harness.Smp.Machine.Run"/>: builds the code cache in the reserved
    /// region, registers the dispatcher as the vmcall handler and redirects every vCPU's start RIP.
    /// </summary>
    public static KernelDbt Attach(Machine machine, DbtOptions? options = null)
    {
        if (machine.AttachedAgents.Any(a => a is Agent)) throw new InvalidOperationException("a DBT is attached to this machine already");
        // The DBT's edge stubs and dispatcher entries are vmcalls, and every vCPU must start at a
        // translation: an agent asked before it for either would take them (attach it after the DBT,
        // or first: true around the DBT's own agent, as the bench's timing wrapper does).
        if (machine.AttachedAgents.FirstOrDefault(a => (a.Implements & (Hooks.Vmcall | Hooks.StartRip)) != 0) is { } other)
            throw new InvalidOperationException($"the machine already has an agent handling vmcall or start RIPs ({other.GetType().Name}): attach the DBT first");
        var dbt = new KernelDbt(machine, options ?? DbtOptions.Default);
        machine.Attach(dbt.HostAgent);
        if (dbt.Options.SwitchOnAt is > 0 and long at) machine.ScheduleHostEvent(dbt.HostAgent, at);
        return dbt;
    }

    /// <summary>The DBT's side of the machine's host-agent seam (attached by <see cref="Attach"/>).</summary>
    public HostAgent HostAgent { get; }

    private sealed class Agent(KernelDbt dbt) : HostAgent
    {
        public override bool Vmcall(Vcpu v) { dbt.Dispatcher.OnVmcall(v); return true; }
        public override ulong StartRip(Vcpu v, ulong rip) => dbt.Dispatcher.StartAt(v, rip);
        public override CodeOrigin? OriginOf(ulong rip) => dbt.Translator.OriginOf(rip);
        public override bool SafePoint(Vcpu v) => dbt.Switch.SafePoint(v);
        public override bool InterruptBoundary(Vcpu v) => dbt.AtNativeBoundary(v);
        public override void HostEvent(Vcpu v) => dbt.SwitchOnFromHost(v);

        // Precise interrupts only in the DRK-style configuration: elsewhere the machine delivers at
        // every boundary without asking (its one array-length test).
        public override Hooks Implements =>
            Hooks.Vmcall | Hooks.StartRip | Hooks.OriginOf | Hooks.SafePoint
            | (dbt.Options is { InterruptsViaDispatcher: true, PlantedDrkInterruptsAnywhere: false } ? Hooks.InterruptBoundary : Hooks.None);
    }

    /// <summary>What code is at pc: native, a stub of the cache, an entry path, or a rule's translation (and where inside it).</summary>
    public CodeRegion RegionAt(ulong pc)
    {
        var c = Cache;
        if (!c.Contains(pc)) return new(CodeKind.Native);
        if (pc == c.ExitStub) return new(CodeKind.ExitStubPopfq, Offset: 0, Length: 2);
        if (pc == c.ExitStub + 1) return new(CodeKind.ExitStubJmp, Offset: 1, Length: 2);
        if (pc == c.IretqStub || pc == c.SyscallVmcall) return new(CodeKind.DrkStub);
        if (pc - c.StubPage < 0x1000) return new(CodeKind.Level2Routine, Offset: (long)(pc - c.StubPage));
        if (pc - c.Edges.Start < c.Edges.Capacity) return new(CodeKind.EdgeStub);
        if (BlockTranslator.BlockAt(Translator.SortedBlocks(), pc) is not { } b || pc - b.CacheStart >= (ulong)b.CacheLength) return new(CodeKind.Unknown);
        uint off = (uint)(pc - b.CacheStart);
        if (b.EntrySlotDelta is not null) return new(CodeKind.EntryPath, Offset: off, Length: b.CacheLength);
        int i = -1;
        for (int k = 0; k < b.Sources.Length && b.Sources[k].Offset <= off; k++) i = k;
        if (i < 0) return new(CodeKind.Unknown);
        uint start = b.Sources[i].Offset, end = i + 1 < b.Sources.Length ? b.Sources[i + 1].Offset : (uint)b.CacheLength;
        return new(CodeKind.Rule, b.Sources[i].Rule, off - start, (int)(end - start));
    }

    /// <summary>
    /// DRK-style precise interrupts: true where the vCPU's state is a native instruction boundary
    /// (native code, or a code-cache point whose recovery is a native RIP with nothing pushed and
    /// the live flags native), so an external interrupt delivered here gives the handler an exact
    /// native frame. Elsewhere (inside a translation, a stub) the machine holds the interrupt.
    /// </summary>
    private bool AtNativeBoundary(Vcpu v)
    {
        ulong pc = v.Rip;
        return !Cache.Contains(pc) || v.Cpl != 0
            || BlockTranslator.RecoverAt(Translator.SortedBlocks(), pc) is { Pops: 0, FlagsWord: -1, TargetOnStack: false };
    }

    /// <summary>--dbt-on-at: switchon at vCPU 0's block boundary (its native RIP goes to its translation).</summary>
    private void SwitchOnFromHost(Vcpu v)
    {
        try
        {
            if (Switch.IsOn) return;
            Switch.SwitchOn(v);
            if (v.Cpl == 0 && !Cache.Contains(v.Rip)) v.Rip = Translator.GetOrTranslate(v, v.Rip);
        }
        catch (Exception e) when (e is Harness.Dbt.Kernel.SwitchException or Translate.TranslationException or CodeCacheFullException)
        {
            Machine.Stop(Harness.Smp.Cpu.StopReason.HostError, 0, $"dbt: switchon at instruction {Options.SwitchOnAt}: {e.Message}");
        }
    }

    /// <summary>
    /// switchoff (wipe: a cache flush) and/or switchon at one of v's instruction boundaries, from a host
    /// event (tests, properties: a generated point rather than a dispatcher entry). False when v is not
    /// at a safe point (nothing changed: try a later boundary); a switch that fails stops the machine
    /// with a HostError naming it.
    /// </summary>
    public bool TrySwitchAtHost(Vcpu v, bool off, bool wipe, bool on)
    {
        try { return Switch.TryAtHost(v, off, wipe, on); }
        catch (Exception e) when (e is Harness.Dbt.Kernel.SwitchException or Translate.TranslationException or CodeCacheFullException)
        {
            Machine.Stop(Harness.Smp.Cpu.StopReason.HostError, 0, $"dbt: {(wipe ? "cache flush" : off ? "switchoff" : "switchon")} at vCPU {v.Index}'s instruction {v.Retired}: {e.Message}");
            return true;
        }
    }

    /// <summary>The translated block containing a code-cache address, as native and translated assembly (diagnostics, golden files).</summary>
    public string Describe(ulong cacheAddress)
    {
        var b = Translator.Blocks.FirstOrDefault(x => cacheAddress - x.CacheStart < (ulong)x.CacheLength);
        if (b is null) return $"0x{cacheAddress:x}: not in a translated block";
        return BlockListing.Format(Machine, Cache, b, mark: cacheAddress);
    }
}
