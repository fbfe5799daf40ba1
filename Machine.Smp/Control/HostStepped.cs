namespace Harness.Smp.Control;

/// <summary>
/// For a host that steps the vCPUs itself with <see cref="Vcpu.RunFor"/> after
/// <see cref="Machine.Boot"/> and <see cref="Machine.BootAp"/>: one thread, no scheduling of its
/// own, and scheduling points that do nothing (under TSO no store drains unless the host drains
/// it: the litmus runner's exhaustive search makes each drain a move of its own).
/// </summary>
public sealed class HostStepped : ExecutionControl
{
    public override string Name => "host-stepped";
    public override bool SingleThreaded => true;
    public override void StartVcpu(Machine machine, Vcpu vcpu) { }
    public override void Run(Machine machine) =>
        throw new InvalidOperationException("a host-stepped machine is run by its host with Vcpu.RunFor, not Machine.Run");
}
