using Harness.Smp.Cpu;

namespace Harness.Smp.Control;

/// <summary>
/// Stop-the-world for host agents that must see every vCPU at an instruction boundary (the DBT's
/// switchon, switchoff and cache flush). The requester runs on a vCPU thread (in a vmcall handler
/// or at a host event); every other started vCPU parks in its event check at the next block
/// boundary where <see cref="HostAgent.SafePoint"/> accepts its state, and stays there until the
/// action is done. Under a single-threaded control (Deterministic) the others are not running
/// while the requester is, so the action runs at once.
///
/// No host lock is held while a vCPU is parked: parking is a counter plus a wait on an event that
/// the requester sets when it is done.
/// </summary>
public sealed class WorldStop
{
    private readonly Machine machine;
    // requester, generation and parked change only under gate; a parked vCPU waits on gate with the
    // condition re-checked under it, so a release cannot be missed (a reset event could be reset by
    // the next stop before a slow waiter saw it set).
    private readonly object gate = new();
    private volatile Vcpu? requester;
    private int generation, parked;
    private readonly HashSet<Vcpu> waitingRequesters = new();

    /// <summary>
    /// True for a vCPU parked because it asked for a world stop of its own while another was under
    /// way: it sits in a host call-out (a dispatcher entry), not at a guest instruction boundary, so
    /// the action must leave its state alone. Only meaningful inside an action.
    /// </summary>
    public bool IsWaitingRequester(Vcpu v) { lock (gate) return waitingRequesters.Contains(v); }

    internal WorldStop(Machine machine) => this.machine = machine;

    /// <summary>How long a requester waits for the others to park before it stops the machine with a report.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>True while a stop is requested: the vCPU loop's event check looks at it (and a control's waits end for it).</summary>
    public bool Pending => requester is not null;

    /// <summary>Runs action while every other started vCPU is parked; returns false if the machine stopped first.</summary>
    public bool Run(Vcpu by, Action action)
    {
        if (!machine.Control.SupportsWorldStop)
        {
            // Fail at once with the reason, not after the timeout with "the others did not park".
            machine.Stop(StopReason.HostError, 0, $"world stop requested by vCPU {by.Index}: not supported under the {machine.Control.Name} control " +
                "(a DBT switchon, switchoff or cache flush; give the scenario a code cache large enough for its guest)");
            return false;
        }
        if (machine.Control.SingleThreaded)
        {
            // The others are between slices, and a single-threaded control ends a slice only where
            // the safe-point filter accepts the state (Vcpu.Service), so they are parked already.
            foreach (var v in machine.Vcpus)
                if (v != by && v.Started && !machine.AtSafePoint(v))
                        throw new InvalidOperationException($"world stop: vCPU {v.Index} is between slices at rip 0x{v.Rip:x}, which is no safe point");
            action();
            return true;
        }
        if (machine.Control.ControlledWaits) return RunControlled(by, action);
        lock (gate)
        {
            // Another vCPU's stop is under way: park for it (as a vCPU), then take our turn.
            while (requester is not null && requester != by)
            {
                if (machine.Stopping) return false;
                waitingRequesters.Add(by);
                try { ParkLocked(by); }
                finally { waitingRequesters.Remove(by); }
            }
            requester = by;
            parked = 0;
            generation++;
        }
        try
        {
            foreach (var v in machine.Vcpus) if (v != by) v.Poke();
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                int target = machine.Vcpus.Count(v => v.Started && v != by);
                lock (gate) if (parked >= target) break;
                if (machine.Stopping) return false;
                if (waited.Elapsed > Timeout)
                {
                    // Never a silent hang: name every vCPU's state.
                    string states = string.Join("; ", machine.Vcpus.Where(v => v.Started && v != by)
                        .Select(v => $"vCPU {v.Index} rip 0x{v.Rip:x} cpl {v.Cpl}{(v.IsHalted ? " halted" : "")}"));
                    machine.Stop(StopReason.HostError, 0, $"world stop requested by vCPU {by.Index}: the others did not park within {(Timeout.TotalSeconds >= 1 ? $"{Timeout.TotalSeconds:F0} s" : $"{Timeout.TotalMilliseconds:F0} ms")} ({states})");
                    return false;
                }
                Thread.Yield();
            }
            action();
            return true;
        }
        finally
        {
            lock (gate)
            {
                requester = null;
                Monitor.PulseAll(gate);
            }
        }
    }

    /// <summary>
    /// The world stop under a control that schedules the threads (Coyote): the same protocol, but
    /// every wait is the control's own (a controlled pause re-evaluated at each scheduling point),
    /// and the gate is held only to update the counters, never across a wait.
    /// </summary>
    private bool RunControlled(Vcpu by, Action action)
    {
        var control = machine.Control;
        while (true)
        {
            lock (gate)
            {
                if (requester is null || requester == by)
                {
                    requester = by;
                    parked = 0;
                    generation++;
                    break;
                }
                waitingRequesters.Add(by);
            }
            // Another vCPU's stop is under way: park for it (as a vCPU), then take our turn.
            try { ParkControlled(by); }
            finally { lock (gate) waitingRequesters.Remove(by); }
            if (machine.Stopping) return false;
        }
        try
        {
            foreach (var v in machine.Vcpus) if (v != by) v.Poke();
            bool AllParked()
            {
                if (machine.Stopping) return true;
                int target = 0;
                foreach (var v in machine.Vcpus) if (v.Started && v != by) target++;
                lock (gate) return parked >= target;
            }
            control.WaitUntil(by, AllParked);
            if (machine.Stopping) return false;
            action();
            return true;
        }
        finally
        {
            lock (gate) requester = null;
        }
    }

    private void ParkControlled(Vcpu v)
    {
        int g;
        lock (gate)
        {
            g = generation;
            parked++;
        }
        machine.Control.WaitUntil(v, () => requester is null || generation != g || machine.Stopping);
    }

    /// <summary>Called by a vCPU at a block boundary while a stop is pending: parks it if its state is acceptable.</summary>
    internal bool TryPark(Vcpu v)
    {
        var r = requester;
        if (r is null || r == v) return false;
        if (!machine.AtSafePoint(v)) { v.RequestService(); return false; }
        // A parked vCPU's stores are in memory before the requester changes anything (the stop is
        // an IPI whose handler synchronizes with locked operations on real hardware).
        v.DrainStores();
        if (machine.Control.ControlledWaits)
        {
            lock (gate) if (requester is null || requester == v) return false;
            ParkControlled(v);
            return true;
        }
        lock (gate)
        {
            if (requester is null || requester == v) return false;
            ParkLocked(v);
        }
        return true;
    }

    private void ParkLocked(Vcpu v)
    {
        int g = generation;
        parked++;
        while (requester is not null && generation == g && !machine.Stopping) Monitor.Wait(gate, 50);
    }
}
