using System.Diagnostics;
using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;

namespace Harness.Smp;

public sealed class MachineOptions
{
    public int Vcpus { get; init; } = 1;
    public ulong MemoryBytes { get; init; } = 256UL << 20;
    /// <summary>Size of the reserved region at the top of RAM (the DBT's code cache lives there).</summary>
    public ulong ReservedBytes { get; init; } = 16UL << 20;
    /// <summary>Stop when any vCPU has retired this many instructions (guest time). 0: no limit.</summary>
    public long MaxInstructions { get; init; }
    public ExecutionControl? Control { get; init; }
    /// <summary>A NUL-terminated ASCII string for the guest, its address in the boot-info block (offset 40).</summary>
    public string? CommandLine { get; init; }
    /// <summary>Receives the guest's console bytes (port 0xE9) as they are written.</summary>
    public Stream? Console { get; init; }
    /// <summary>
    /// The memory model of a controlled run: sequential consistency (the default) or x86-TSO with a
    /// store buffer per vCPU whose draining the control decides. TSO needs a single-threaded or
    /// Coyote control and the scheduling points on (<see cref="Seams.PointsSwitch"/>).
    /// </summary>
    public MemoryModel MemoryModel { get; init; } = MemoryModel.Sc;
    /// <summary>
    /// Whether hot blocks run as compiled host code (Compile/BlockCompiler.cs; default: hot blocks,
    /// or the HARNESS_COMPILE environment variable). Never with the scheduling points on.
    /// </summary>
    public Compile.BlockCompilation? Compile { get; init; }
    /// <summary>A bug planted in the block compiler (its tests only).</summary>
    internal Compile.CompilerPlant CompilerPlant { get; init; }
    /// <summary>
    /// Tests of the compiler: the runs after which a block is compiled under Hot (0: the default), and
    /// compiling on the vCPU's own thread, so that which code runs compiled is reproducible.
    /// </summary>
    internal int CompileThreshold { get; init; }
    internal bool CompileOnVcpuThread { get; init; }
}

/// <summary>Generated code's source: the native instruction it translates and the rule (or stub) that emitted it.</summary>
public readonly record struct CodeOrigin(ulong NativeRip, string Rule);

/// <summary>Instructions: executed; GuestTime: retired-instruction time, which also advances while halted.</summary>
/// <summary>A machine's state at one moment (<see cref="Machine.Capture"/>): its non-zero RAM pages, vCPUs, console so far, and vCPU 0's guest time.</summary>
public sealed record MachineSnapshot(int Vcpus, ulong MemoryBytes, ulong ReservedBase, IReadOnlyList<(ulong Page, byte[] Bytes)> Pages,
    VcpuSnapshot[] VcpuStates, byte[] Console, long At)
{
    public long RamBytes => Pages.Count * (long)Memory.PhysicalMemory.PageSize;
}

public sealed record VcpuStats(int Index, bool Started, long Instructions, long GuestTime, long BlocksDecoded, long Interrupts, long Exceptions);

public sealed record RunResult(StopReason Reason, int ExitStatus, string Message, TimeSpan Wall, IReadOnlyList<VcpuStats> Vcpus, Exception? HostException)
{
    public long TotalInstructions => Vcpus.Sum(v => v.Instructions);
    public bool Exited => Reason == StopReason.Exited;
}

/// <summary>
/// The emulated SMP machine: RAM, vCPUs with local APICs, the debug console and exit ports, the
/// boot protocol, and the execution control that runs the vCPUs.
/// </summary>
public sealed class Machine : IDisposable
{
    public const ushort ConsolePort = 0xE9, ExitPort = 0xF4;

    public readonly PhysicalMemory Memory;
    public readonly Vcpu[] Vcpus;
    public readonly ExecutionControl Control;
    public readonly long MaxInstructions;
    public readonly ulong ReservedBase, ReservedSize;
    public readonly MemoryModel MemoryModel;
    /// <summary>When blocks are compiled to host code (<see cref="MachineOptions.Compile"/>).</summary>
    public readonly Compile.BlockCompilation Compile;
    internal readonly Compile.CompilerPlant CompilerPlant;
    internal readonly int CompileThreshold;
    internal readonly bool CompileOnVcpuThread;
    /// <summary>Serializes locked accesses that cross a page (split locks) and cmpxchg16b.</summary>
    internal readonly object SplitLock = new();
    public ElfImage? Image { get; private set; }

    private readonly BootState boot;
    private readonly Stream? console;
    private readonly object consoleLock = new();
    private int stopped;
    private volatile bool stopping;
    private StopReason reason;
    private int exitStatus;
    private string message = "";
    private Exception? hostException;
    internal readonly ManualResetEventSlim StoppedEvent = new(false);

    static Machine()
    {
        // Initialize the seam switch before any handler is compiled: the JIT folds a static readonly
        // bool only when its class is already initialized (otherwise, with tiering off, every data
        // access would keep a test of the flag).
        System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(typeof(Seams).TypeHandle);
    }

    public Machine(MachineOptions o)
    {
        if (o.Vcpus < 1 || o.Vcpus > BootLayout.MaxCpus) throw new ArgumentOutOfRangeException(nameof(o), $"vCPU count must be 1..{BootLayout.MaxCpus} (got {o.Vcpus})");
        if (o.MemoryBytes < 4UL << 20) throw new ArgumentOutOfRangeException(nameof(o), $"memory must be at least 4 MiB (got {o.MemoryBytes})");
        if (o.ReservedBytes % PhysicalMemory.PageSize != 0 || o.ReservedBytes + (2UL << 20) > o.MemoryBytes)
            throw new ArgumentOutOfRangeException(nameof(o), $"reserved region of {o.ReservedBytes} bytes does not fit in {o.MemoryBytes} bytes of RAM above 2 MiB");
        Memory = new PhysicalMemory(o.MemoryBytes);
        Control = o.Control ?? new FreeRunning();
        MaxInstructions = o.MaxInstructions > 0 ? o.MaxInstructions : long.MaxValue;
        ReservedSize = o.ReservedBytes;
        ReservedBase = o.MemoryBytes - o.ReservedBytes;
        console = o.Console;
        MemoryModel = o.MemoryModel;
        Compile = o.Compile ?? Smp.Compile.BlockCompiler.Default;
        CompilerPlant = o.CompilerPlant;
        CompileThreshold = o.CompileThreshold;
        CompileOnVcpuThread = o.CompileOnVcpuThread;
        if (MemoryModel == MemoryModel.Tso) CheckTso(Control);
        if (o.CommandLine is { } cl && (cl.Length > BootLayout.CommandLineMax || cl.Any(ch => ch is < ' ' or > '~')))
            throw new ArgumentException($"the command line must be printable ASCII of at most {BootLayout.CommandLineMax} characters");
        boot = BootLayout.Write(Memory, o.Vcpus, ReservedBase, ReservedSize, o.CommandLine);
        Vcpus = new Vcpu[o.Vcpus];
        for (int i = 0; i < Vcpus.Length; i++) Vcpus[i] = new Vcpu(this, i);
        World = new WorldStop(this);
    }

    public BootState BootState => boot;

    // Not in the constructor: it is compiled before this class's static constructor has initialized
    // Seams, so Seams.Points would not fold there (benchmarks/seams-codegen.sh compares the code).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void CheckTso(ExecutionControl control)
    {
        if (control is FreeRunning)
            throw new ArgumentException("the TSO memory model needs a deterministic or Coyote control: free-running vCPUs already run on the host's own x86-TSO, which the machine does not control");
        if (!Seams.Points)
            throw new InvalidOperationException($"the TSO memory model drains store buffers at scheduling points: set the AppContext switch {Seams.PointsSwitch} before any machine type is used");
    }

    /// <summary>
    /// The data-access observer (a race detector), or null. Consulted only when the scheduling
    /// points are on; set it before the machine runs.
    /// </summary>
    public AccessObserver? Observer { get; set; }

    public bool Stopping => stopping;

    /// <summary>
    /// Why the machine stopped (None while it runs), as <see cref="Run"/>'s result reports it; for a
    /// machine stepped with <see cref="Boot"/> and <see cref="Vcpu.RunFor"/>, which has no RunResult.
    /// </summary>
    public (StopReason Reason, int ExitStatus, string Message) StopState => stopping ? (reason, exitStatus, message) : (StopReason.None, 0, "");

    /// <summary>Stop-the-world for host agents (the DBT's switch operations).</summary>
    public WorldStop World { get; }

    internal volatile AgentSet Agents = AgentSet.Empty;
    private readonly object agentsLock = new();

    /// <summary>
    /// Attaches a host agent, after the others or (first) before them, e.g. to wrap another's vmcall.
    /// Attach before the run: a hook asked meanwhile sees the set before or after.
    /// </summary>
    public void Attach(HostAgent agent, bool first = false)
    {
        lock (agentsLock)
        {
            if (Agents.All.Contains(agent)) throw new InvalidOperationException($"{agent.GetType().Name} is attached already");
            Agents = new AgentSet(first ? [agent, .. Agents.All] : [.. Agents.All, agent]);
        }
    }

    /// <summary>Detaches an agent; its pending host event, if any, is cancelled.</summary>
    public void Detach(HostAgent agent)
    {
        ScheduleHostEvent(agent, long.MaxValue);
        lock (agentsLock) Agents = new AgentSet(Agents.All.Where(a => a != agent).ToArray());
    }

    /// <summary>The attached agents, in attach order.</summary>
    public IReadOnlyList<HostAgent> AttachedAgents => Agents.All;

    /// <summary>The agents' start RIP for a vCPU that would start at rip (<see cref="HostAgent.StartRip"/>).</summary>
    public ulong StartRip(Vcpu v, ulong rip)
    {
        foreach (var a in Agents.StartRip) rip = a.StartRip(v, rip);
        return rip;
    }

    /// <summary>Whether every agent accepts the vCPU's state as a world-stop parking point (<see cref="HostAgent.SafePoint"/>).</summary>
    public bool AtSafePoint(Vcpu v)
    {
        foreach (var a in Agents.SafePoint) if (!a.SafePoint(v)) return false;
        return true;
    }

    /// <summary>What generated code at rip stands for, from the first agent that knows (<see cref="HostAgent.OriginOf"/>).</summary>
    public CodeOrigin? OriginOf(ulong rip)
    {
        foreach (var a in Agents.OriginOf) if (a.OriginOf(rip) is { } o) return o;
        return null;
    }

    internal bool HandleVmcall(Vcpu v)
    {
        foreach (var a in Agents.Vmcall) if (a.Vmcall(v)) return true;
        return false;
    }

    internal bool InterruptBoundary(Vcpu v)
    {
        foreach (var a in Agents.InterruptBoundary) if (!a.InterruptBoundary(v)) return false;
        return true;
    }

    internal void BlockDecoded(Vcpu v, ulong rip, ulong physical)
    {
        foreach (var a in Agents.BlockDecoded) a.BlockDecoded(v, rip, physical);
    }

    // Under TSO a host agent runs as a VM exit would: the vCPU's store buffer drains first, so what
    // the agent reads and writes in guest memory is ordered after the vCPU's earlier stores (a later
    // drain would otherwise overwrite the agent's write). vmcall and world-stop parking drain too.
    internal void EventDelivering(Vcpu v, int vector, bool raisedByInstruction, ulong frameRip)
    {
        v.DrainStores();
        foreach (var a in Agents.EventDelivering) a.EventDelivering(v, vector, raisedByInstruction, frameRip);
    }

    /// <summary>
    /// A one-shot host event for an agent: when vCPU 0's guest time reaches <paramref name="at"/>
    /// instructions, the agent's <see cref="HostAgent.HostEvent"/> runs on its thread at exactly that
    /// instruction boundary (the interpreter stops there), or, if vCPU 0 is halted then, when its time
    /// jumps there. Each agent has at most one pending event (scheduling again replaces it;
    /// long.MaxValue cancels it); the handler may schedule its next one. Agents' events are independent.
    /// </summary>
    public void ScheduleHostEvent(HostAgent agent, long at)
    {
        lock (agentsLock)
        {
            hostEvents.RemoveAll(e => e.Agent == agent);
            if (at != long.MaxValue) hostEvents.Add((agent, at));
            HostEventAt = hostEvents.Count == 0 ? long.MaxValue : hostEvents.Min(e => e.At);
        }
    }

    /// <summary>The earliest pending host event's guest time (long.MaxValue: none).</summary>
    public long HostEventAt { get; private set; } = long.MaxValue;
    private readonly List<(HostAgent Agent, long At)> hostEvents = [];

    internal void FireHostEvent(Vcpu v)
    {
        // The events due now, earliest first, taken under the lock and run outside it: a handler may
        // schedule its next event (one due at once runs at the next boundary), stop the world, or
        // reach a scheduling point.
        List<(HostAgent Agent, long At)> due;
        lock (agentsLock)
        {
            due = hostEvents.FindAll(e => e.At <= v.Retired);
            hostEvents.RemoveAll(e => e.At <= v.Retired);
            HostEventAt = hostEvents.Count == 0 ? long.MaxValue : hostEvents.Min(e => e.At);
        }
        if (due.Count > 1) due.Sort((p, q) => p.At.CompareTo(q.At));
        v.DrainStores();
        foreach (var (agent, _) in due)
        {
            agent.HostEvent(v);
            if (Stopping) return;
        }
    }

    public ElfImage LoadElf(ReadOnlySpan<byte> file, string name) => Image = ElfLoader.Load(this, file, name);

    public ElfImage LoadElf(string path)
    {
        byte[] bytes;
        if (Directory.Exists(path)) throw new ImageException($"{path}: is a directory, not an ELF image");
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ImageException($"{path}: cannot read: {e.Message}"); }
        return LoadElf(bytes, path);
    }

    /// <summary>
    /// Boots the BSP at the image's entry point (or at entry) and runs until the machine stops.
    /// setup, if given, adjusts the BSP's initial state after the boot-protocol reset (tests use it).
    /// </summary>
    public RunResult Run(CancellationToken cancel = default, ulong? entry = null, Action<Vcpu>? setup = null)
    {
        var bsp = Boot(entry, setup);
        var sw = Stopwatch.StartNew();
        using (cancel.Register(() => Stop(StopReason.Interrupted, 0, "interrupted by the host (Ctrl-C or cancellation)")))
        {
            Control.StartVcpu(this, bsp);
            Control.Run(this);
        }
        DrainStoreBuffers();
        sw.Stop();
        lock (consoleLock) console?.Flush();
        var stats = Vcpus.Select(v => new VcpuStats(v.Index, v.Started, v.Executed, v.Retired, v.BlocksDecoded, v.InterruptsDelivered, v.ExceptionsDelivered)).ToArray();
        return new RunResult(reason, exitStatus, message, sw.Elapsed, stats, hostException);
    }

    /// <summary>
    /// The BSP's start as <see cref="Run"/> does it (boot-protocol reset, setup, start-RIP filter),
    /// without running: instead of Run, for a host that steps a machine itself with
    /// <see cref="Vcpu.RunFor"/> (the DBT's lockstep native reference, Dbt/Verify/StateCheck.cs).
    /// Returns the BSP.
    /// </summary>
    public Vcpu Boot(ulong? entry = null, Action<Vcpu>? setup = null)
    {
        ulong rip = entry ?? Image?.Entry ?? throw new InvalidOperationException("no image loaded and no entry point given");
        var bsp = Vcpus[0];
        bsp.Reset(rip, BootLayout.BootStackTop, BootLayout.BootInfo, boot);
        setup?.Invoke(bsp);
        bsp.Rip = StartRip(bsp, bsp.Rip);
        bsp.Started = true;
        return bsp;
    }

    /// <summary>
    /// Starts AP `index` at rip with the boot state, as <see cref="Boot"/> starts the BSP, without a
    /// mailbox or start-up IPI and without handing it to the control: for a host that steps every
    /// vCPU itself with <see cref="Vcpu.RunFor"/> (the litmus runner's exhaustive exploration).
    /// </summary>
    public Vcpu BootAp(int index, ulong rip, ulong rsp)
    {
        if (index <= 0 || index >= Vcpus.Length) throw new ArgumentOutOfRangeException(nameof(index), $"AP index must be 1..{Vcpus.Length - 1}");
        var v = Vcpus[index];
        v.Reset(rip, rsp, 0, boot);
        v.Started = true;
        return v;
    }

    // ---- snapshots ---------------------------------------------------------------------------------

    /// <summary>
    /// The machine's state for <see cref="Restore"/>: RAM (its non-zero pages), every vCPU's
    /// registers, APIC and counters, and the console so far. Call when no vCPU runs (after
    /// <see cref="Run"/> returned: a single-threaded control leaves every vCPU at an instruction
    /// boundary). consoleSoFar: what the guest printed until now (the machine does not keep it).
    /// </summary>
    public MachineSnapshot Capture(byte[] consoleSoFar)
    {
        var pages = new List<(ulong Page, byte[] Bytes)>();
        for (ulong pa = 0; pa < Memory.Size; pa += PhysicalMemory.PageSize)
        {
            var page = Memory.Span(pa, (int)PhysicalMemory.PageSize);
            if (page.ContainsAnyExcept((byte)0)) pages.Add((pa, page.ToArray()));
        }
        return new MachineSnapshot(Vcpus.Length, Memory.Size, ReservedBase, pages, Vcpus.Select(v => v.Capture()).ToArray(), consoleSoFar, Vcpus[0].Retired);
    }

    /// <summary>
    /// Takes a snapshot's state into this fresh machine (same vCPU count, RAM size and reserved
    /// region), before host agents attach (the DBT writes its cache into RAM) and before
    /// <see cref="Resume"/>: RAM page by page (pages the snapshot does not have are zeroed), the
    /// vCPUs, and the console so far (written to this machine's console).
    /// </summary>
    public void Restore(MachineSnapshot s)
    {
        if (s.Vcpus != Vcpus.Length || s.MemoryBytes != Memory.Size || s.ReservedBase != ReservedBase)
            throw new ArgumentException($"the snapshot is of a machine with {s.Vcpus} vCPUs, {s.MemoryBytes} bytes of RAM, reserved at 0x{s.ReservedBase:x}; this one has {Vcpus.Length}, {Memory.Size}, 0x{ReservedBase:x}");
        int next = 0;
        for (ulong pa = 0; pa < Memory.Size; pa += PhysicalMemory.PageSize)
        {
            var page = Memory.Span(pa, (int)PhysicalMemory.PageSize);
            if (next < s.Pages.Count && s.Pages[next].Page == pa) s.Pages[next++].Bytes.CopyTo(page);
            else if (page.ContainsAnyExcept((byte)0)) page.Clear();
        }
        for (int i = 0; i < Vcpus.Length; i++) Vcpus[i].Restore(s.VcpuStates[i]);
        if (console is not null) lock (consoleLock) console.Write(s.Console);
        restored = true;
    }

    private bool restored;

    /// <summary>Runs a machine <see cref="Restore"/>d from a snapshot until it stops: every vCPU that had started runs on from where it was.</summary>
    public RunResult Resume(CancellationToken cancel = default)
    {
        if (!restored) throw new InvalidOperationException("Resume needs a machine restored from a snapshot (Restore)");
        var sw = Stopwatch.StartNew();
        using (cancel.Register(() => Stop(StopReason.Interrupted, 0, "interrupted by the host (Ctrl-C or cancellation)")))
        {
            foreach (var v in Vcpus) if (v.Started) Control.StartVcpu(this, v);
            Control.Run(this);
        }
        DrainStoreBuffers();
        sw.Stop();
        lock (consoleLock) console?.Flush();
        var stats = Vcpus.Select(v => new VcpuStats(v.Index, v.Started, v.Executed, v.Retired, v.BlocksDecoded, v.InterruptsDelivered, v.ExceptionsDelivered)).ToArray();
        return new RunResult(reason, exitStatus, message, sw.Elapsed, stats, hostException);
    }

    /// <summary>
    /// After a run under TSO: what the vCPUs stored reaches memory, so that reports and final states
    /// read it (every vCPU thread has finished; a hardware buffer would drain on its own too).
    /// </summary>
    private void DrainStoreBuffers()
    {
        foreach (var v in Vcpus) v.Tso?.DrainAll();
    }

    /// <summary>Stops the machine; the first reason wins. Safe from any thread.</summary>
    public void Stop(StopReason why, int status, string text)
    {
        if (Interlocked.CompareExchange(ref stopped, 1, 0) != 0) return;
        reason = why;
        exitStatus = status;
        message = text;
        stopping = true;
        foreach (var v in Vcpus) v.Poke();
        StoppedEvent.Set();
    }

    /// <summary>
    /// An exception escaped the interpreter on a vCPU thread: a harness bug. Reported, never
    /// swallowed. Public for execution controls that live outside this assembly (Verification).
    /// </summary>
    public void HostFault(Vcpu? v, Exception e)
    {
        string where = v is null ? "the scheduler" : $"vCPU {v.Index} at rip 0x{v.CurrentRip:x}";
        if (Interlocked.CompareExchange(ref hostException, e, null) == null)
            Stop(StopReason.HostError, 0, $"host exception on {where}: {e.GetType().Name}: {e.Message}");
    }

    // ---- devices -------------------------------------------------------------------------------

    internal ulong PortIn(Vcpu v, ushort port, int size) => size == 4 ? 0xFFFF_FFFF : size == 2 ? 0xFFFFUL : 0xFFUL;

    internal void PortOut(Vcpu v, ushort port, int size, ulong value)
    {
        switch (port)
        {
            case ConsolePort:
                lock (consoleLock)
                {
                    console?.WriteByte((byte)value);
                    if ((byte)value == (byte)'\n') console?.Flush();
                }
                break;
            case ExitPort when size == 4:
                Stop(StopReason.Exited, (int)(uint)value, $"guest exited with status {(uint)value} (vCPU {v.Index})");
                break;
        }
    }

    // ---- inter-processor interrupts --------------------------------------------------------------

    /// <summary>A write to the x2APIC ICR: fixed IPIs and start-up IPIs, with destination shorthands.</summary>
    internal void SendIpi(Vcpu from, ulong icr)
    {
        int vector = (int)(icr & 0xFF);
        int mode = (int)(icr >> 8) & 7;
        int shorthand = (int)(icr >> 18) & 3;
        uint dest = (uint)(icr >> 32);
        for (int i = 0; i < Vcpus.Length; i++)
        {
            bool hit = shorthand switch
            {
                0 => dest == 0xFFFF_FFFF || dest == (uint)i,
                1 => i == from.Index,
                2 => true,
                _ => i != from.Index,
            };
            if (!hit) continue;
            switch (mode)
            {
                case 0: case 1: // fixed, lowest priority (delivered as fixed)
                    if (vector >= 16)
                    {
                        if (Seams.Points && Observer is { } o) o.IpiSent(from, i, vector);
                        Vcpus[i].Post(vector);
                    }
                    break;
                case 6:
                    StartAp(from, i);
                    break;
                // INIT (5) and the other modes are accepted and ignored.
            }
        }
    }

    private void StartAp(Vcpu from, int index)
    {
        var v = Vcpus[index];
        lock (v) // concurrent start-up IPIs to the same AP: only the first starts it
        {
            if (v.Started) return;
            ulong mb = BootLayout.MailboxAddress(index);
            ulong rip = Memory.ReadU64(mb), rsp = Memory.ReadU64(mb + 8), arg = Memory.ReadU64(mb + 16);
            v.Reset(rip, rsp, arg, boot);
            v.Rip = StartRip(v, rip);
            v.Started = true;
        }
        if (Seams.Points && Observer is { } o) o.ApStarted(from, v);
        Control.StartVcpu(this, v);
    }

    /// <summary>
    /// Raised once, first thing in Dispose, while guest memory is still readable: host agents keep
    /// what they will report afterwards (the DBT's client counters keep their last values).
    /// </summary>
    public event Action? Disposing;

    private int disposed;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0) return;
        Disposing?.Invoke();
        foreach (var v in Vcpus) v.Dispose();
        Memory.Dispose();
        StoppedEvent.Dispose();
    }
}
