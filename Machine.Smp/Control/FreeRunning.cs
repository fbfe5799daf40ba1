using Harness.Smp.Cpu;

namespace Harness.Smp.Control;

/// <summary>
/// Real host threads, one per vCPU, real races. Interrupts are deliverable as soon as they are
/// pending. An idle vCPU sleeps on a host event until another vCPU posts it an interrupt.
/// </summary>
public sealed class FreeRunning : ExecutionControl
{
    private readonly List<Thread> threads = [];
    private readonly object gate = new();
    private int idleCount, startedCount;

    public override string Name => "free";

    public override void StartVcpu(Machine machine, Vcpu vcpu)
    {
        var t = new Thread(() => Body(machine, vcpu)) { Name = $"vcpu{vcpu.Index}", IsBackground = true };
        lock (gate) { threads.Add(t); startedCount++; }
        t.Start();
    }

    private void Body(Machine machine, Vcpu vcpu)
    {
        try
        {
            while (vcpu.Run() == RunExit.Idle) Idle(vcpu);
        }
        catch (Exception e)
        {
            machine.HostFault(vcpu, e);
        }
    }

    public override void Run(Machine machine)
    {
        machine.StoppedEvent.Wait();
        // Threads see the stop at their next block boundary (or are woken from idle); join them
        // so no vCPU outlives the run. Joining a stuck thread would hang the host: bound the wait.
        while (true)
        {
            Thread[] snapshot;
            lock (gate) snapshot = [.. threads];
            foreach (var t in snapshot) t.Join(TimeSpan.FromSeconds(5));
            lock (gate) if (threads.Count == snapshot.Length) break;
        }
    }

    public override void Idle(Vcpu vcpu)
    {
        var ev = vcpu.WakeEvent;
        ev.Reset();
        if (vcpu.CanWake) return;
        Interlocked.Exchange(ref vcpu.IdleFlag, 1);
        int idle = Interlocked.Increment(ref idleCount);
        if (vcpu.CanWake)
        {
            if (Interlocked.Exchange(ref vcpu.IdleFlag, 0) == 1) Interlocked.Decrement(ref idleCount);
            return;
        }
        if (idle == Volatile.Read(ref startedCount))
            vcpu.Machine.Stop(StopReason.Deadlock, 0, "every vCPU is halted and none can be woken (hlt with interrupts off, or no timer and no IPI)");
        ev.Wait();
    }

    /// <summary>
    /// Free-running guest time: a halted vCPU's clock may jump no further than the running vCPUs
    /// have got, so an idle vCPU sleeps instead of spinning through timer ticks on a host core the
    /// busy vCPUs need (and cannot race ahead to the instruction limit). With no vCPU running, time
    /// jumps at once. An interrupt posted to it, or a stop, ends the wait.
    /// </summary>
    public override long HaltedUntil(Vcpu vcpu, long wake)
    {
        var machine = vcpu.Machine;
        while (true)
        {
            // A world stop parks vCPUs in their event check: go back there now.
            if (machine.Stopping || vcpu.Apic.HasIncoming || machine.World.Pending) return vcpu.Retired;
            long running = long.MinValue;
            foreach (var other in machine.Vcpus)
                if (other != vcpu && other.Started && !other.IsHalted && Volatile.Read(ref other.IdleFlag) == 0)
                    running = Math.Max(running, other.Retired);
            if (running == long.MinValue || running >= wake) return wake;
            var ev = vcpu.WakeEvent;
            ev.Reset();
            if (machine.Stopping || vcpu.Apic.HasIncoming || machine.World.Pending) return vcpu.Retired;
            ev.Wait(TimeSpan.FromMicroseconds(100));
        }
    }

    public override void Wake(Vcpu vcpu)
    {
        if (Interlocked.Exchange(ref vcpu.IdleFlag, 0) == 1) Interlocked.Decrement(ref idleCount);
        vcpu.WakeEvent.Set();
    }
}
