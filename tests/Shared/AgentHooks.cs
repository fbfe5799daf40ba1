using Harness.Smp;

namespace Harness.Tests.Shared;

/// <summary>One-hook host agents for tests (the machine's seam is <see cref="HostAgent"/>; these attach a <see cref="HookAgent"/>).</summary>
public static class AgentHooks
{
    /// <summary>Handles every vmcall with action.</summary>
    public static HookAgent OnVmcall(this Machine m, Action<Vcpu> action) =>
        Attach(m, new HookAgent { OnVmcall = v => { action(v); return true; } });

    public static HookAgent OnBlockDecoded(this Machine m, Action<Vcpu, ulong, ulong> observer) =>
        Attach(m, new HookAgent { OnBlockDecoded = observer });

    public static HookAgent OnEventDelivering(this Machine m, Action<Vcpu, int, bool, ulong> observer) =>
        Attach(m, new HookAgent { OnEventDelivering = observer });

    /// <summary>Runs action on vCPU 0 when its guest time reaches at (a host event; the action may re-arm it with <see cref="Machine.ScheduleHostEvent"/>).</summary>
    public static HookAgent At(this Machine m, long at, Action<Vcpu> action)
    {
        var agent = Attach(m, new HookAgent { OnHostEvent = action });
        m.ScheduleHostEvent(agent, at);
        return agent;
    }

    private static HookAgent Attach(Machine m, HookAgent a)
    {
        m.Attach(a);
        return a;
    }
}
