namespace Harness.Smp.Control;

/// <summary>What a data access did: a plain load or store, or a locked read-modify-write (xchg, lock-prefixed, cmpxchg8b/16b).</summary>
public enum AccessKind : byte { Read, Write, Atomic }

/// <summary>
/// Sees the guest's data accesses and the events that order vCPUs, for a happens-before race
/// detector (Verification/Races). Called on the accessing vCPU's thread, after the access, only
/// when the scheduling points are on (the calls compile away in free-running builds) and an
/// observer is set (<see cref="Machine.Observer"/>); the controls that use it run one vCPU at a
/// time, so an observer needs no locking of its own. Stack accesses (push, pop, call, ret) are
/// not reported, as they are not scheduling points: the stack is the thread's own.
/// </summary>
public abstract class AccessObserver
{
    /// <summary>A data access of size bytes at virtual address va; value: what was loaded or stored (the old value for Atomic).</summary>
    public abstract void Access(Vcpu v, ulong va, int size, AccessKind kind, ulong value);

    /// <summary>from sent a fixed interrupt (vector) to vCPU to through the ICR.</summary>
    public virtual void IpiSent(Vcpu from, int to, int vector) { }

    /// <summary>An external interrupt is being delivered to v (an IPI a sender posted, or the timer).</summary>
    public virtual void InterruptDelivered(Vcpu v, int vector) { }

    /// <summary>from started AP ap with a start-up IPI.</summary>
    public virtual void ApStarted(Vcpu from, Vcpu ap) { }

    /// <summary>A host agent handled v's vmcall (the DBT's dispatcher runs under its translator lock).</summary>
    public virtual void HostCall(Vcpu v) { }
}
