using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Microsoft.Coyote.Random;
using Microsoft.Coyote.Runtime;
using CoyoteThread = Microsoft.Coyote.Rewriting.Types.Threading.Thread;

namespace Harness.Verification;

/// <summary>How a <see cref="CoyoteControl"/> turns the machine's seams into Coyote decisions.</summary>
public sealed record CoyoteOptions
{
    /// <summary>
    /// A pending interrupt becomes deliverable after a delay Coyote picks from [0, bound) guest
    /// instructions: one integer choice per interrupt reaches every instruction of a window with
    /// the same probability, where a coin flip at each instruction would reach the k-th one with
    /// probability 2^-k. 1 or less: no delay and no choice.
    /// </summary>
    public int InterruptDelayBound { get; init; } = 64;

    /// <summary>
    /// Guest instructions a vCPU runs before a forced scheduling point. Data accesses are
    /// scheduling points already (when <see cref="Seams.Points"/> is on), so the slice only matters
    /// for code that runs long without touching memory, and for runs with the seams off, where it
    /// is the only interleaving there is. Each point costs microseconds of host time, about as much
    /// as interpreting a few hundred instructions.
    /// </summary>
    public long Slice { get; init; } = 1000;

    /// <summary>
    /// Which seams become scheduling points (kind, address; for Halt and Spin the address is the
    /// instruction's). Null: all of them. Filtering out accesses to memory only one vCPU uses keeps
    /// long runs affordable; <see cref="PointFilters"/> has the usual ones.
    /// </summary>
    public Func<PointKind, ulong, bool>? PointFilter { get; init; }
}

public static class PointFilters
{
    /// <summary>No data-access points: for single-vCPU scenarios, where only interrupt timing varies.</summary>
    public static readonly Func<PointKind, ulong, bool> NoDataAccesses = (kind, _) => kind is not (PointKind.Load or PointKind.Store);

    /// <summary>
    /// Plain loads and stores are points only inside [start, end) (shared data); locked
    /// operations, spin-waits, halts, explicit points and code patches are points everywhere.
    /// </summary>
    public static Func<PointKind, ulong, bool> SharedRange(ulong start, ulong end) =>
        (kind, address) => kind is not (PointKind.Load or PointKind.Store) || address - start < end - start;
}

/// <summary>
/// The Coyote-controlled execution: one controlled thread per vCPU (created through Coyote's
/// thread wrappers, so the test engine schedules them: only one runs at a time, and it switches
/// only at scheduling points), a scheduling point at every seam, and interrupt delays chosen by
/// Coyote. Everything that can vary between runs is a Coyote decision, so a saved trace replays
/// the run exactly. Only meaningful inside Coyote's testing engine (see <see cref="Explorer"/>);
/// waits never hold a host lock across a scheduling point.
/// </summary>
public sealed class CoyoteControl : ExecutionControl
{
    private readonly CoyoteOptions options;
    private readonly Func<PointKind, ulong, bool>? filter;
    private readonly List<Thread> threads = [];
    private Generator? generator;

    private enum Wait : byte { None, Idle, Halted, Spin, World, Exited }
    // What each vCPU is paused for, and a count of scheduling points passed by any vCPU. Touched
    // only by controlled threads, which Coyote runs one at a time.
    private Wait[] waiting = [];
    private Vcpu[] vcpus = [];
    private long progress;

    public CoyoteControl(CoyoteOptions? options = null)
    {
        this.options = options ?? new CoyoteOptions();
        if (this.options.Slice <= 0) throw new ArgumentOutOfRangeException(nameof(options), "the slice must be positive");
        filter = this.options.PointFilter;
    }

    public CoyoteOptions Options => options;
    public override string Name => $"coyote(slice={options.Slice}, interrupt-delay<{Math.Max(1, options.InterruptDelayBound)})";
    public override long Slice => options.Slice;

    // WorldStop parks vCPUs on a host monitor and spins for them with Thread.Yield, neither of
    // which Coyote schedules: a stop would wait out its timeout. Not supported yet.
    public override bool ControlledWaits => true;

    /// <summary>A world stop's waits (the requester for the others to park, a parked vCPU for the release): controlled pauses.</summary>
    public override void WaitUntil(Vcpu vcpu, Func<bool> condition)
    {
        if (condition()) return;
        waiting[vcpu.Index] = Wait.World;
        try { Operation.PauseUntil(condition); }
        finally { waiting[vcpu.Index] = Wait.None; }
    }

    /// <summary>
    /// Monitors: called on the vCPU's thread at every scheduling point that passed the filter,
    /// before the point (a failed <see cref="Verify.That"/> there ends the execution as a bug).
    /// Add them before the machine runs.
    /// </summary>
    public Action<Vcpu, PointKind, ulong>? OnPoint { get; set; }

    /// <summary>Data-access, spin and halt points that passed the filter.</summary>
    public long PointsTaken { get; private set; }
    /// <summary>Forced scheduling points at slice ends.</summary>
    public long SliceEnds { get; private set; }
    /// <summary>Interrupt delays Coyote chose.</summary>
    public long DelaysChosen { get; private set; }

    /// <summary>True when every vCPU thread has finished (so the machine may be disposed).</summary>
    public bool ThreadsFinished
    {
        get { lock (threads) return threads.All(t => !t.IsAlive); }
    }

    public override void StartVcpu(Machine machine, Vcpu vcpu)
    {
        if (vcpus.Length == 0)
        {
            vcpus = machine.Vcpus;
            waiting = new Wait[vcpus.Length];
        }
        // Coyote names the thread and finds its operation by that name: leave the name alone.
        var t = CoyoteThread.Create(() => Body(machine, vcpu));
        lock (threads) threads.Add(t);
        // A scheduling point: the new vCPU may run before its starter continues.
        CoyoteThread.Start(t);
    }

    private void Body(Machine machine, Vcpu vcpu)
    {
        try
        {
            while (true)
            {
                var exit = vcpu.Run();
                if (exit == RunExit.Stopped || machine.Stopping) return;
                if (exit == RunExit.Idle) Idle(vcpu);
                else
                {
                    SliceEnds++;
                    progress++;
                    SchedulingPoint.Interleave();
                    DrainChoice(vcpu, all: false);
                }
            }
        }
        catch (ThreadInterruptedException)
        {
            // Coyote ended the execution (a bug was found elsewhere, or the step bound was
            // reached) and interrupts every controlled thread: nothing to report, just leave.
            machine.Stop(StopReason.Interrupted, 0, "the exploration ended this execution");
        }
        catch (Exception e)
        {
            machine.HostFault(vcpu, e);
        }
        finally
        {
            waiting[vcpu.Index] = Wait.Exited;
        }
    }

    /// <summary>Runs on the test's own (controlled) thread: waits, as a Coyote operation, for every vCPU thread.</summary>
    public override void Run(Machine machine)
    {
        try
        {
            // The list grows only while some vCPU thread still runs (a start-up IPI), so once the
            // last listed thread is joined no other can appear.
            for (int i = 0; ; i++)
            {
                Thread t;
                lock (threads)
                {
                    if (i >= threads.Count) break;
                    t = threads[i];
                }
                CoyoteThread.Join(t);
            }
        }
        catch (ThreadInterruptedException)
        {
            // The execution was ended by Coyote: the vCPU threads are being interrupted too. Wait
            // for them (uncontrolled now) so the caller may dispose the machine.
            machine.Stop(StopReason.Interrupted, 0, "the exploration ended this execution");
            Thread[] all;
            lock (threads) all = [.. threads];
            foreach (var t in all) t.Join(TimeSpan.FromSeconds(10));
            throw;
        }
    }

    public override void Point(Vcpu vcpu, PointKind kind, ulong address)
    {
        if (filter is not null && !filter(kind, address)) return;
        OnPoint?.Invoke(vcpu, kind, address);
        PointsTaken++;
        progress++;
        if (kind == PointKind.Spin) SpinWait(vcpu);
        else SchedulingPoint.Interleave();
        DrainChoice(vcpu, all: kind == PointKind.Halt);
    }

    /// <summary>
    /// Under TSO: Coyote picks how many of the vCPU's oldest buffered stores reach memory now (0..n;
    /// with all, 1..n repeatedly until none is left: the vCPU halts), with a scheduling point after
    /// each drain, so another vCPU can run between any two drains and between a drain and the next
    /// instruction. One integer choice per point rather than a coin per store, so that a store
    /// staying buffered across several of the owner's loads is as likely as draining at once.
    /// </summary>
    private void DrainChoice(Vcpu vcpu, bool all)
    {
        if (vcpu.Tso is not { Count: > 0 } sb) return;
        generator ??= Generator.Create();
        do
        {
            int n = sb.Count;
            int d = all ? 1 + generator.NextInteger(n) : generator.NextInteger(n + 1);
            if (d == 0) return;
            for (int i = 0; i < d; i++) sb.DrainOne();
            StoresDrained += d;
            progress++;
            SchedulingPoint.Interleave();
        }
        while (all && sb.Count > 0);
    }

    /// <summary>Buffered stores drained by Coyote's choices (TSO only; fences and locked instructions drain on their own).</summary>
    public long StoresDrained { get; private set; }

    /// <summary>
    /// A spin-wait (pause) pauses until another vCPU has passed a scheduling point, or until no
    /// other vCPU can run (then only the spinner's own interrupts can end the spin). Spinning
    /// again before anyone else moved would re-read the same memory, so no interleaving is lost;
    /// and priority-based strategies (PCT), which ignore yields, would otherwise let a
    /// high-priority spinner spin on a low-priority lock holder until the step bound.
    /// </summary>
    private void SpinWait(Vcpu vcpu)
    {
        var machine = vcpu.Machine;
        long seen = progress;
        int me = vcpu.Index;
        waiting[me] = Wait.Spin;
        try
        {
            Operation.PauseUntil(() => progress != seen || machine.Stopping || machine.World.Pending || !AnyOtherRunnable(me));
        }
        finally
        {
            waiting[me] = Wait.None;
        }
    }

    private bool AnyOtherRunnable(int me)
    {
        for (int i = 0; i < waiting.Length; i++)
            if (i != me && waiting[i] == Wait.None && vcpus[i].Started) return true;
        return false;
    }

    public override long InterruptDelay(Vcpu vcpu, int vector)
    {
        int bound = options.InterruptDelayBound;
        if (bound <= 1) return 0;
        DelaysChosen++;
        generator ??= Generator.Create();
        return generator.NextInteger(bound);
    }

    /// <summary>
    /// Halted with nothing to wake it but another vCPU: a controlled pause until it can wake (an
    /// interrupt was posted, or the machine stops). When every started vCPU is in this state no
    /// one can ever wake them: the machine stops with a deadlock, as under the other controls.
    /// </summary>
    public override void Idle(Vcpu vcpu)
    {
        if (vcpu.CanWake) return;
        var machine = vcpu.Machine;
        if (machine.World.Pending)
        {
            // Back to the event check to park; a point first, so a vCPU that cannot park there
            // yet does not loop without one.
            SchedulingPoint.Interleave();
            return;
        }
        waiting[vcpu.Index] = Wait.Idle;
        try
        {
            bool anyAwake = false;
            foreach (var v in machine.Vcpus)
                if (v.Started && waiting[v.Index] is not (Wait.Idle or Wait.Exited)) anyAwake = true;
            if (!anyAwake)
            {
                machine.Stop(StopReason.Deadlock, 0, "every vCPU is halted and none can be woken (hlt with interrupts off, or no timer and no IPI)");
                return;
            }
            // A world stop parks vCPUs in their event check: a pending one ends the wait too.
            Operation.PauseUntil(() => vcpu.CanWake || machine.World.Pending);
        }
        finally
        {
            waiting[vcpu.Index] = Wait.None;
        }
    }

    /// <summary>
    /// Halted until guest time `wake` (its timer): as in free-running mode, its clock jumps no
    /// further than the running vCPUs' have got, so an idle vCPU cannot race through timer ticks
    /// to the instruction limit while another does the work. The wait is a controlled pause.
    /// </summary>
    public override long HaltedUntil(Vcpu vcpu, long wake)
    {
        var machine = vcpu.Machine;
        bool Ready()
        {
            if (machine.Stopping || vcpu.Apic.HasIncoming || machine.World.Pending) return true;
            foreach (var other in machine.Vcpus)
                if (other != vcpu && other.Started && !other.IsHalted && other.Retired < wake) return false;
            return true;
        }
        if (!Ready())
        {
            waiting[vcpu.Index] = Wait.Halted;
            try { Operation.PauseUntil(Ready); }
            finally { waiting[vcpu.Index] = Wait.None; }
        }
        return machine.Stopping || vcpu.Apic.HasIncoming || machine.World.Pending ? vcpu.Retired : wake;
    }

    // Wake stays a no-op: paused vCPUs' conditions are re-evaluated by Coyote at every scheduling
    // point, and Wake is also called from uncontrolled threads (a cancellation's Stop), where a
    // scheduling point is not allowed.
}
