using Harness.Smp.Cpu;

namespace Harness.Smp.Control;

/// <summary>
/// One host thread runs every vCPU round-robin, `quantum` guest instructions at a time, with a
/// fixed interrupt delay: identical output and counts on every run. A quantum of 1 interleaves at
/// every instruction.
/// </summary>
public class Deterministic(long quantum = 1000, long interruptDelay = 0) : ExecutionControl
{
    private readonly List<Vcpu> running = [];

    public long Quantum { get; } = quantum > 0 ? quantum : throw new ArgumentOutOfRangeException(nameof(quantum), "quantum must be positive");
    public override string Name => $"deterministic(quantum={Quantum})";
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
