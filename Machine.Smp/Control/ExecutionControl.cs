namespace Harness.Smp.Control;

/// <summary>Where a scheduling point sits: what the vCPU is about to do (CodePatch: a host agent on its thread rewrites code another vCPU may run, the DBT's chaining patch).</summary>
public enum PointKind { Load, Store, Atomic, Spin, Halt, Explicit, CodePatch }

/// <summary>
/// Compile-time and start-up switches for the test seams. In free-running builds the scheduling
/// points are guarded by a static readonly bool that the JIT folds to a constant, so they cost
/// nothing; building with NO_SEAMS removes them from the source altogether (the benchmark that
/// shows the difference uses that build).
/// </summary>
public static class Seams
{
    public const string PointsSwitch = "Harness.Smp.SchedulingPoints";
#if NO_SEAMS
    public const bool Points = false;
#elif SEAMS_PLANTED_COST
    // Planted bug for benchmarks/seams-codegen.sh --planted: a mutable flag the JIT cannot fold.
    public static bool Points = AppContext.TryGetSwitch(PointsSwitch, out bool on) && on;
#else
    /// <summary>Set the AppContext switch before any machine type is touched (test module initializer).</summary>
    public static readonly bool Points = AppContext.TryGetSwitch(PointsSwitch, out bool on) && on;
#endif
}

/// <summary>Why <see cref="Vcpu.Run"/> returned to its control.</summary>
public enum RunExit { Stopped, Idle, SliceEnd }

/// <summary>
/// The execution control: the one place every source of nondeterminism passes through. It decides
/// which host threads run the vCPUs, when an interrupt that became pending may be delivered, and
/// what happens at scheduling points, spin-waits and idle. Free-running, deterministic and (in
/// Verification) Coyote-controlled execution are its three implementations.
/// </summary>
public abstract class ExecutionControl
{
    public abstract string Name { get; }

    /// <summary>Runs the machine (the BSP is already started) until it stops; returns on the caller's thread.</summary>
    public abstract void Run(Machine machine);

    /// <summary>A vCPU has been started (the BSP by the machine, an AP by a start-up IPI, on the sender's thread).</summary>
    public abstract void StartVcpu(Machine machine, Vcpu vcpu);

    /// <summary>Guest instructions (of the receiving vCPU) between an interrupt becoming pending and becoming deliverable.</summary>
    public virtual long InterruptDelay(Vcpu vcpu, int vector) => 0;

    /// <summary>A scheduling point; called only when <see cref="Seams.Points"/> is on.</summary>
    public virtual void Point(Vcpu vcpu, PointKind kind, ulong address) { }

    /// <summary>The vCPU is halted with nothing that can wake it but another vCPU: wait until <see cref="Wake"/> or a stop.</summary>
    public virtual void Idle(Vcpu vcpu) { }

    /// <summary>
    /// The vCPU is halted and its next wake event (timer or pending interrupt) is at guest time
    /// `wake`. Returns the guest time to jump to: `wake`, or an earlier time to re-check (an interrupt
    /// arrived, the machine is stopping). May block. By default time jumps at once.
    /// </summary>
    public virtual long HaltedUntil(Vcpu vcpu, long wake) => wake;

    /// <summary>Another vCPU posted an interrupt to this one, or the machine is stopping.</summary>
    public virtual void Wake(Vcpu vcpu) { }

    /// <summary>Guest instructions a vCPU runs before control returns to the scheduler (long.MaxValue: until idle or stop).</summary>
    public virtual long Slice => long.MaxValue;

    /// <summary>True when one host thread runs every vCPU (no other vCPU runs while one does).</summary>
    public virtual bool SingleThreaded => false;

    /// <summary>
    /// Whether <see cref="WorldStop"/> can park the other vCPUs under this control (its parking waits
    /// on a host monitor, which a control that schedules the threads itself cannot see).
    /// </summary>
    public virtual bool SupportsWorldStop => true;

    /// <summary>
    /// True when the control schedules the vCPU threads itself (Coyote), so a vCPU must not wait on
    /// a host monitor the control cannot see: <see cref="WorldStop"/> then parks and waits through
    /// <see cref="WaitUntil"/>.
    /// </summary>
    public virtual bool ControlledWaits => false;

    /// <summary>Blocks vcpu's thread until condition holds, as a wait the control schedules (only when <see cref="ControlledWaits"/>).</summary>
    public virtual void WaitUntil(Vcpu vcpu, Func<bool> condition) =>
        throw new NotSupportedException($"the {Name} control has no controlled waits");
}
