using Harness.Machine.Cpu;

namespace Harness.Machine.Control;

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

    public override void Wake(Vcpu vcpu)
    {
        if (Interlocked.Exchange(ref vcpu.IdleFlag, 0) == 1) Interlocked.Decrement(ref idleCount);
        vcpu.WakeEvent.Set();
    }
}
