using Harness.Smp.Cpu;

namespace Harness.Smp.Control;

/// <summary>
/// One host thread runs every vCPU round-robin, `quantum` guest instructions at a time, with a
/// fixed interrupt delay: identical output and counts on every run. A quantum of 1 interleaves at
/// every instruction. Under the TSO memory model a buffered store drains once its vCPU has
/// executed `storeLatency` more instructions, at the vCPU's next scheduling point or slice end (or
/// earlier, at a fence, locked or serializing instruction): a fixed rule, so TSO runs reproduce too.
/// </summary>
public class Deterministic(long quantum = 1000, long interruptDelay = 0, long storeLatency = 4) : ExecutionControl
{
    private readonly List<Vcpu> running = [];

    public long Quantum { get; } = quantum > 0 ? quantum : throw new ArgumentOutOfRangeException(nameof(quantum), "quantum must be positive");
    public long StoreLatency { get; } = storeLatency >= 0 ? storeLatency : throw new ArgumentOutOfRangeException(nameof(storeLatency), "the store latency cannot be negative");
    public override string Name => $"deterministic(quantum={Quantum})";

    public override void Point(Vcpu vcpu, PointKind kind, ulong address) => DrainAged(vcpu);

    private void DrainAged(Vcpu vcpu)
    {
        if (vcpu.Tso is { Count: > 0 } sb) sb.DrainOlderThan(vcpu.Now - StoreLatency + 1);
    }
    public override long Slice => Quantum;
    public override bool SingleThreaded => true;
    public override long InterruptDelay(Vcpu vcpu, int vector) => interruptDelay;

    public override void StartVcpu(Machine machine, Vcpu vcpu) => running.Add(vcpu);

    public override void Run(Machine machine)
    {
        try
        {
            while (!machine.Stopping)
            {
                bool progress = false;
                // Index loop: a vCPU may start another (SIPI) during its slice.
                for (int i = 0; i < running.Count && !machine.Stopping; i++)
                {
                    var v = running[i];
                    if (v.IsHalted && !v.CanWake) continue;
                    long before = v.Retired;
                    var exit = v.Run();
                    DrainAged(v);
                    if (exit == RunExit.SliceEnd || v.Retired != before || v.CanWake) progress = true;
                }
                if (!progress && !machine.Stopping)
                    machine.Stop(StopReason.Deadlock, 0, "every vCPU is halted and none can be woken (hlt with interrupts off, or no timer and no IPI)");
            }
        }
        catch (Exception e)
        {
            machine.HostFault(null, e);
        }
    }
}
