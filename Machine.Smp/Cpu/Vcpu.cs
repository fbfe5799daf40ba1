using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Harness.Smp.Apic;
using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Harness.Smp.Memory;

namespace Harness.Smp;

/// <summary>
/// One virtual CPU: its architectural state, TLB, local APIC and the interpreter loop. All of it
/// is touched only by the host thread that runs the vCPU, except <see cref="Post"/> and the
/// wake/stop signals, which other threads use.
/// </summary>
public sealed unsafe partial class Vcpu : IDisposable
{
    public readonly Machine Machine;
    public readonly PhysicalMemory Mem;
    public readonly int Index;
    public readonly CpuState* S;
    public readonly LocalApic Apic = new();
    internal readonly ExecutionControl Control;
    private readonly BlockBuilder builder;
    /// <summary>Interpreted runs after which a block is compiled (1: at once); 0: never (Compile/BlockCompiler.cs).</summary>
    private readonly int compileAfter;
    /// <summary>Compile on this thread (Always, and tests that need it reproducible) rather than on the compiler thread.</summary>
    private readonly bool compileHere;

    /// <summary>Set by a handler to end the current block after this instruction (self-modifying code, mode changes).</summary>
    internal bool BreakBlock;
    /// <summary>Non-zero when another thread asked this vCPU to look at its events (IPI, stop).</summary>
    private volatile int eventFlag;
    /// <summary>Guest time at which the loop must stop and service events: timer, interrupt, slice end, limit.</summary>
    private long nextEvent;
    private long sliceEnd;
    internal int IdleFlag;
    internal readonly ManualResetEventSlim WakeEvent = new(false);
    public bool Started { get; internal set; }

    // Per-vCPU lookup cache from (rip, user) to decoded block; flushed with the TLB.
    private const int L1Size = 1024;
    // Key and block side by side (one cache line holds four entries), read without bounds checks:
    // the index is masked to the size.
    private struct L1Entry { public ulong Key; public Block? Block; }
    private readonly L1Entry[] l1 = new L1Entry[L1Size];

    // Statistics (exact, reproducible counts).
    public long BlocksDecoded, InterruptsDelivered, ExceptionsDelivered;
    /// <summary>Guest time skipped while halted; Retired - HaltedTime instructions were executed.</summary>
    public long HaltedTime;

    /// <summary>Instructions this vCPU actually executed (guest time minus the time it spent halted).</summary>
    public long Executed => S->Retired - HaltedTime;

    internal Vcpu(Machine machine, int index)
    {
        Machine = machine;
        Mem = machine.Memory;
        Index = index;
        Control = machine.Control;
        // The state lives in a pinned array (the pinned object heap), not native memory: it stays valid
        // as long as anyone holds the vCPU (a report reading registers after the machine is
        // disposed gets the last values) and the GC frees it with the vCPU, without a finalizer
        // that would keep the whole machine alive for an extra collection.
        stateBlock = GC.AllocateArray<byte>(sizeof(CpuState) + 64, pinned: true);
        S = (CpuState*)(((nuint)Unsafe.AsPointer(ref stateBlock[0]) + 63) & ~(nuint)63);
        builder = new BlockBuilder(this);
        compileAfter = machine.Compile switch
        {
            Compile.BlockCompilation.Hot => machine.CompileThreshold > 0 ? machine.CompileThreshold : Compile.BlockCompiler.HotThreshold,
            Compile.BlockCompilation.Always => 1,
            _ => 0,
        };
        compileHere = compileAfter == 1 || machine.CompileOnVcpuThread;
        InitMemory();
    }

    public long Retired => S->Retired;
    public ulong Rip { get => S->Rip; set => S->Rip = value; }
    public bool IsHalted => S->Halted != 0;

    /// <summary>The next instruction runs in an sti (or mov ss) interrupt shadow: no interrupt is taken before it.</summary>
    public bool InInterruptShadow => S->ShadowUntil > S->Retired;

    public ref ulong Gpr(int r) => ref S->Gpr[r];

    public int Cpl
    {
        get => S->Cpl;
        internal set { S->Cpl = value; UserBit = value == 3 ? 1UL : 0; }
    }

    /// <summary>
    /// True when something could take this vCPU out of halt now or later without another vCPU's
    /// help. Public for execution controls outside this assembly (Verification's idle wait).
    /// </summary>
    public bool CanWake
    {
        get
        {
            if (Machine.Stopping) return true;
            // A host event is due at a guest time even while vCPU 0 is halted (Service jumps to it).
            if (Index == 0 && Machine.HostEventAt != long.MaxValue) return true;
            if (Apic.HasIncoming) return (S->RflagsRaw & Cpu.Rflags.IF) != 0 || !IsHalted;
            if (!IsHalted) return true;
            if ((S->RflagsRaw & Cpu.Rflags.IF) == 0) return false;
            return Apic.AnyPending || Apic.TimerWakes;
        }
    }

    /// <summary>From any thread: post a fixed interrupt to this vCPU.</summary>
    public void Post(int vector)
    {
        Apic.Post(vector);
        eventFlag = 1;
        Control.Wake(this);
    }

    /// <summary>From any thread: make the vCPU look at the machine's stop flag.</summary>
    internal void Poke()
    {
        eventFlag = 1;
        Control.Wake(this);
    }

    /// <summary>Forces the event check at the next block boundary (state that affects delivery changed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void RequestService() => nextEvent = 0;

    // ---- the interpreter loop ------------------------------------------------------------------

    // The instruction being executed and its block's first instruction: read only when a handler
    // throws, to find the faulting instruction (the hot loop keeps no EH-visible state of its own).
    private Insn* curInsn, blockStart;

    /// <summary>
    /// Guest time at the instruction executing now (between instructions: <see cref="Retired"/>).
    /// Retired itself advances once per block; this counts the block's instructions before the
    /// current one too.
    /// </summary>
    public long Now => curInsn != null ? S->Retired + (curInsn - blockStart) : S->Retired;

    /// <summary>The address of the instruction executing now (for reports), or RIP between instructions.</summary>
    public ulong CurrentRip => curInsn != null ? curInsn->Ip : S->Rip;

    /// <summary>Runs until the machine stops, the vCPU idles, or the control's slice ends.</summary>
    public RunExit Run() => Run(Control.Slice);

    /// <summary>
    /// Runs on the caller's thread until this vCPU has retired `instructions` more (guest time; the
    /// last block is cut at the count, so a machine without a <see cref="HostAgent.SafePoint"/> stops
    /// exactly there), the machine stops, or the vCPU idles; the control's slice is not used. For a
    /// host that steps a machine itself after <see cref="Machine.Boot"/>: the DBT's lockstep native
    /// reference advances to the native instruction count of each dispatcher entry.
    /// </summary>
    public RunExit RunFor(long instructions) =>
        instructions > 0 ? Run(instructions) : throw new ArgumentOutOfRangeException(nameof(instructions), "must be positive");

    private RunExit Run(long slice)
    {
        sliceEnd = slice == long.MaxValue ? long.MaxValue : S->Retired + slice;
        nextEvent = 0;
        while (true)
        {
            try
            {
                return Loop();
            }
            catch (GuestFault f) when (curInsn != null)
            {
                try
                {
                    ref Insn x = ref *curInsn;
                    S->Retired += curInsn - blockStart;
                    curInsn = null;
                    S->Rip = x.Ip;
                    RaiseException(f, ref x);
                }
                catch (MachineStop stop) { Machine.Stop(stop.Reason, 0, $"vCPU {Index}: {stop.Message}"); return RunExit.Stopped; }
                catch (Exception e) { Machine.HostFault(this, e); return RunExit.Stopped; }
            }
            catch (MachineStop stop)
            {
                Machine.Stop(stop.Reason, 0, $"vCPU {Index}: {stop.Message}");
                return RunExit.Stopped;
            }
            catch (Exception e)
            {
                Machine.HostFault(this, e);
                return RunExit.Stopped;
            }
        }
    }

    /// <summary>
    /// The interpreter loop. Per block: check events, find the block, run its instructions through
    /// their handler pointers, then advance guest time once. No try region here, so the JIT keeps
    /// the loop state in registers.
    /// </summary>
    private RunExit Loop()
    {
        var s = S;
        while (true)
        {
            if (eventFlag != 0 || s->Retired >= nextEvent)
            {
                var exit = Service();
                if (exit is { } e) return e;
                continue;
            }
            var block = Lookup(s->Rip);
            long budget = nextEvent - s->Retired;
            // Compiled code has no scheduling points: with them on, every block is interpreted.
            if (!Seams.Points && compileAfter != 0)
            {
                var code = block.Code;
                // The count stops at the threshold: both vCPUs writing a shared block's line on
                // every run would make them wait for each other.
                if (code is null && block.Heat < compileAfter)
                {
                    int heat = ++block.Heat;
                    if (heat == compileAfter || heat == Compile.BlockCompiler.EarlyBind) code = CompileHot(block, hot: heat == compileAfter);
                }
                if (code is not null && budget >= block.Count)
                {
                    blockStart = block.Ptr;
                    BreakBlock = false;
                    code(this, s);
                    curInsn = null;
                    continue;
                }
            }
            Insn* p = block.Ptr;
            Insn* end = p + (budget < block.Count ? (int)budget : block.Count);
            blockStart = p;
            BreakBlock = false;
            do
            {
                curInsn = p;
                p->Exec(this, ref *p);
                p++;
            }
            while (p < end && !BreakBlock);
            curInsn = null;
            s->Retired += (long)(((nuint)p - (nuint)blockStart) / (nuint)sizeof(Insn)); // unsigned: a shift
            Insn* last = p - 1;
            if ((last->Flags & InsnFlags.Branch) == 0) s->Rip = last->NextIp;
        }
    }

    /// <summary>
    /// A block reached the compile threshold (hot): compile it now (Always, tests) or on the compiler
    /// thread (Hot); or it is warm (<see cref="Compile.BlockCompiler.EarlyBind"/> runs): bind cached code if there is some.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Compile.CompiledBlock? CompileHot(Block block, bool hot)
    {
        if (block.CompileError is { } e) throw new InvalidOperationException($"compiling the block at 0x{block.Insns[0].Ip:x} failed: {e.Message}", e);
        if (block.Page2 is not null) { block.Heat = int.MinValue; return null; } // runs into the next page: stays interpreted
        // Warm, not hot yet: code this process compiled for the same blocks is bound early (cheap); nothing is compiled.
        if (!hot) return compileHere ? null : Compile.BlockCompiler.BindCached(block, Machine.CompilerPlant);
        if (compileHere) return Compile.BlockCompiler.Compile(block, compileAfter, Machine.CompilerPlant);
        Compile.BlockCompiler.Request(block, compileAfter, Machine.CompilerPlant);
        return null;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Block Lookup(ulong rip)
    {
        ulong key = rip ^ (UserBit << 62);
        int i = (int)(rip ^ (rip >> 10)) & (L1Size - 1);
        ref var e = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(l1), i);
        var b = e.Block;
        if (e.Key == key && b is not null && b.Valid) return b;
        return LookupSlow(rip, key, i);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Block LookupSlow(ulong rip, ulong key, int slot)
    {
        while (true)
        {
            try
            {
                ulong pa = TranslateFetch(rip);
                // Under TSO this vCPU's own stores to a page it is about to decode must be there
                // (self-modifying code is seen by the CPU that wrote it; stores to pages already
                // holding decoded code are never buffered).
                if (Seams.Points && Tso is { Count: > 0 } sb && sb.Touches(pa >> 12)) sb.DrainAll();
                var b = builder.GetOrBuild(rip, pa);
                l1[slot] = new L1Entry { Key = key, Block = b };
                return b;
            }
            catch (GuestFault f)
            {
                // The fetch of the first instruction faulted: deliver it; the handler is the next block.
                var fake = new Insn { Ip = rip, NextIp = rip, Code = Iced.Intel.Code.INVALID };
                RaiseException(f, ref fake);
                rip = S->Rip;
                key = rip ^ (UserBit << 62);
                slot = (int)(rip ^ (rip >> 10)) & (L1Size - 1);
            }
        }
    }

    // ---- events: interrupts, timer, stop, slice ------------------------------------------------

    /// <summary>Handles everything due at this boundary; returns an exit, or null to keep running.</summary>
    private RunExit? Service()
    {
        if (Machine.Stopping) return RunExit.Stopped;
        if (eventFlag != 0)
        {
            eventFlag = 0;
            Apic.Accept(S->Retired, v => Control.InterruptDelay(this, v));
        }
        while (true)
        {
            if (Machine.World.Pending && Machine.World.TryPark(this) && Machine.Stopping) return RunExit.Stopped;
            long now = S->Retired;
            if (now >= Machine.HostEventAt && Index == 0)
            {
                Machine.FireHostEvent(this);
                if (Machine.Stopping) return RunExit.Stopped;
            }
            if (now >= Apic.TimerDeadline) { Apic.TimerExpired(Control.InterruptDelay(this, (int)(Apic.LvtTimer & 0xFF))); continue; }
            if (now >= Machine.MaxInstructions)
            {
                Machine.Stop(StopReason.InstructionLimit, 0, $"vCPU {Index} reached the instruction limit ({Machine.MaxInstructions:N0}) at rip 0x{S->Rip:x}");
                return RunExit.Stopped;
            }
            bool ifOn = (S->RflagsRaw & Cpu.Rflags.IF) != 0;
            int vector = Apic.Deliverable(now, out long earliest);
            bool deliver = ifOn && vector >= 0 && now >= S->ShadowUntil;
            // Held back by a host agent until a boundary it accepts: retry after one instruction.
            bool held = deliver && S->Halted == 0 && Machine.Agents.InterruptBoundary.Length != 0 && !Machine.InterruptBoundary(this);
            if (deliver && !held)
            {
                Apic.Acknowledge(vector);
                S->Halted = 0;
                InterruptsDelivered++;
                if (Seams.Points && Machine.Observer is { } o) o.InterruptDelivered(this, vector);
                try { DeliverEvent(vector, EventKind.External, 0, S->Rip); }
                catch (GuestFault g)
                {
                    // The IDT, gate or stack is bad: the fault is raised at the interrupted instruction.
                    var at = new Insn { Ip = S->Rip, NextIp = S->Rip, Code = Iced.Intel.Code.INVALID };
                    RaiseException(g, ref at);
                }
                continue;
            }
            if (now >= sliceEnd)
            {
                // Single-threaded controls end slices only where a world stop may find the vCPU (see
                // WorldStop): elsewhere the slice goes on one instruction at a time.
                if (!Control.SingleThreaded || Machine.AtSafePoint(this)) return RunExit.SliceEnd;
                sliceEnd = now + 1;
            }

            long interrupt = held ? now + 1 : ifOn && earliest != long.MaxValue ? Math.Max(earliest, S->ShadowUntil) : long.MaxValue;
            if (S->Halted != 0)
            {
                // Halted: guest time jumps to the next event that can wake the vCPU.
                long wake = ifOn ? Math.Min(interrupt, Apic.TimerWakes ? Apic.TimerDeadline : long.MaxValue) : long.MaxValue;
                // A host event is due at a guest time whether or not vCPU 0 is halted then.
                if (Index == 0 && Machine.HostEventAt != long.MaxValue) wake = Math.Min(wake, Math.Max(now, Machine.HostEventAt));
                if (wake == long.MaxValue) return Machine.Stopping ? RunExit.Stopped : RunExit.Idle;
                if (wake > sliceEnd) { SkipTo(sliceEnd); return RunExit.SliceEnd; }
                long target = Control.HaltedUntil(this, Math.Min(Math.Max(now, wake), Machine.MaxInstructions));
                if (Machine.Stopping) return RunExit.Stopped;
                if (eventFlag != 0)
                {
                    eventFlag = 0;
                    Apic.Accept(S->Retired, v => Control.InterruptDelay(this, v));
                }
                SkipTo(Math.Max(now, target));
                continue;
            }
            long next = Math.Min(Math.Min(Apic.TimerDeadline, interrupt), Math.Min(sliceEnd, Machine.MaxInstructions));
            if (Index == 0) next = Math.Min(next, Machine.HostEventAt);
            nextEvent = next;
            return null;
        }
    }

    /// <summary>A halted vCPU's guest time jumps forward: counted as time, not as executed instructions.</summary>
    private void SkipTo(long time)
    {
        HaltedTime += time - S->Retired;
        S->Retired = time;
    }

    /// <summary>A scheduling point for a data access; compiled away unless the seams are on.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Point(PointKind kind, ulong address)
    {
        if (Seams.Points) Control.Point(this, kind, address);
    }

    /// <summary>This vCPU's state for a snapshot: the flat state, the APIC, whether it started, its counters.</summary>
    internal VcpuSnapshot Capture()
    {
        var state = new byte[sizeof(CpuState)];
        fixed (byte* d = state) Buffer.MemoryCopy(S, d, state.Length, state.Length);
        var apic = new LocalApic();
        apic.CopyFrom(Apic);
        return new VcpuSnapshot(state, apic, Started, HaltedTime, BlocksDecoded, InterruptsDelivered, ExceptionsDelivered);
    }

    /// <summary>Takes a snapshot's state (the TLB and decoded-block caches start empty: they are derived).</summary>
    internal void Restore(VcpuSnapshot v)
    {
        fixed (byte* src = v.State) Buffer.MemoryCopy(src, S, sizeof(CpuState), v.State.Length);
        Apic.CopyFrom(v.Apic);
        Cpl = S->Cpl;
        Started = v.Started;
        HaltedTime = v.HaltedTime;
        BlocksDecoded = v.BlocksDecoded;
        InterruptsDelivered = v.InterruptsDelivered;
        ExceptionsDelivered = v.ExceptionsDelivered;
        FlushTlb();
        // Look at events at the first boundary (pending interrupts, the timer, host events).
        eventFlag = 1;
        RequestService();
    }

    /// <summary>Sets the initial architectural state (BSP at e_entry, or an AP from its mailbox).</summary>
    internal void Reset(ulong rip, ulong rsp, ulong rdi, in BootState boot)
    {
        for (int i = 0; i < 16; i++) S->Gpr[i] = 0;
        S->Gpr[Reg.Rsp] = rsp;
        S->Gpr[Reg.Rdi] = rdi;
        S->Rip = rip;
        S->RflagsRaw = Cpu.Rflags.Fixed1;
        S->LazyOp = 0;
        S->Cr0 = boot.Cr0; S->Cr3 = boot.Cr3; S->Cr4 = boot.Cr4; S->Efer = boot.Efer;
        S->GdtBase = boot.GdtBase; S->GdtLimit = boot.GdtLimit;
        S->IdtBase = 0; S->IdtLimit = 0;
        S->Cs = BootLayout.KernelCs; S->Ss = S->Ds = S->Es = BootLayout.KernelDs; S->Fs = S->Gs = 0;
        Cpl = 0;
        S->Halted = 0;
        FlushTlb();
    }

    /// <summary>
    /// Ends the vCPU with its machine. The register state (S) stays readable (last values); the TLB
    /// is emptied, so every guest-memory access takes the slow path, whose page walk refuses with an
    /// ObjectDisposedException once the RAM is freed.
    /// </summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        FlushTlb();
        WakeEvent.Dispose();
    }

    private bool disposed;
    private readonly byte[] stateBlock;
}

/// <summary>One vCPU in a <see cref="MachineSnapshot"/>.</summary>
public sealed record VcpuSnapshot(byte[] State, LocalApic Apic, bool Started, long HaltedTime, long BlocksDecoded, long InterruptsDelivered, long ExceptionsDelivered);

/// <summary>The control-register state the machine's boot setup gives every vCPU.</summary>
public readonly record struct BootState(ulong Cr0, ulong Cr3, ulong Cr4, ulong Efer, ulong GdtBase, uint GdtLimit);
