using System.Reflection;

namespace Harness.Smp;

/// <summary>
/// Host code that takes part in a run (a binary translator, a test's observer, a snapshot or
/// memory-model component): the machine's one seam for it. Attach with <see cref="Machine.Attach"/>
/// before the run and override only the hooks needed. The machine asks only the agents that
/// implement a hook (<see cref="Implements"/>, read once at attach), so an unused hook costs one
/// array-length test on the paths that would call it. Hooks run on the vCPU's thread unless said
/// otherwise; agents are asked in attach order.
/// </summary>
public abstract class HostAgent
{
    /// <summary>
    /// vmcall at CPL 0. RIP already holds the next instruction (the agent may redirect it). Return
    /// true when handled; an agent that declines must leave the state as it found it (the next
    /// agent is asked). A vmcall no agent handles raises #UD in the guest.
    /// </summary>
    public virtual bool Vmcall(Vcpu v) => false;

    /// <summary>
    /// The RIP a vCPU really starts at, given the one it would start at: the BSP in
    /// <see cref="Machine.Run"/>/<see cref="Machine.Boot"/> (after the boot reset and setup), an AP
    /// when its start-up IPI is handled (after the reset from its mailbox; on the sender's thread).
    /// </summary>
    public virtual ulong StartRip(Vcpu v, ulong rip) => rip;

    /// <summary>Each time the interpreter decodes a block it is about to run: its virtual RIP and physical address.</summary>
    public virtual void BlockDecoded(Vcpu v, ulong rip, ulong physical) { }

    /// <summary>
    /// An exception or interrupt is about to be delivered, before anything is pushed (the vCPU holds
    /// the interrupted state): its vector, whether an instruction raised it (a fault or trap, not an
    /// external interrupt), and the RIP the frame will hold.
    /// </summary>
    public virtual void EventDelivering(Vcpu v, int vector, bool raisedByInstruction, ulong frameRip) { }

    /// <summary>
    /// Whether an external interrupt may be delivered at this instruction boundary (default: every
    /// boundary, as the hardware does). An agent whose generated code stands for other code answers
    /// false inside it; the interrupt stays pending and the vCPU goes on one instruction at a time
    /// until every agent answers true. Not asked for a halted vCPU or with IF=0.
    /// </summary>
    public virtual bool InterruptBoundary(Vcpu v) => true;

    /// <summary>Whether a world stop (<see cref="Machine.World"/>) may park the vCPU in its current state (default: any block boundary).</summary>
    public virtual bool SafePoint(Vcpu v) => true;

    /// <summary>
    /// For reports (a fault, an unsupported instruction): what generated code at an address stands
    /// for (the instruction it translates and the rule that emitted it); null if the agent did not
    /// generate it. Called only when a report is built.
    /// </summary>
    public virtual CodeOrigin? OriginOf(ulong rip) => null;

    /// <summary>The one-shot event this agent scheduled with <see cref="Machine.ScheduleHostEvent"/>.</summary>
    public virtual void HostEvent(Vcpu v) { }

    /// <summary>
    /// The hooks the machine asks this agent (by default those its class overrides). Host events are
    /// not among them: an agent gets one only by scheduling it.
    /// </summary>
    public virtual Hooks Implements
    {
        get
        {
            var h = Hooks.None;
            foreach (var (hook, name) in HookMethods)
            {
                var m = GetType().GetMethod(name, BindingFlags.Public | BindingFlags.Instance);
                if (m is not null && m.DeclaringType != typeof(HostAgent)) h |= hook;
            }
            return h;
        }
    }

    private static readonly (Hooks, string)[] HookMethods =
    [
        (Hooks.Vmcall, nameof(Vmcall)), (Hooks.StartRip, nameof(StartRip)), (Hooks.BlockDecoded, nameof(BlockDecoded)),
        (Hooks.EventDelivering, nameof(EventDelivering)), (Hooks.InterruptBoundary, nameof(InterruptBoundary)),
        (Hooks.SafePoint, nameof(SafePoint)), (Hooks.OriginOf, nameof(OriginOf)),
    ];
}

[Flags]
public enum Hooks
{
    None = 0,
    Vmcall = 1, StartRip = 2, BlockDecoded = 4, EventDelivering = 8, InterruptBoundary = 16, SafePoint = 32, OriginOf = 64,
}

/// <summary>An agent made of delegates, for observers and tests that need a hook or two; a hook left null is not implemented.</summary>
public sealed class HookAgent : HostAgent
{
    public Func<Vcpu, bool>? OnVmcall { get; init; }
    public Func<Vcpu, ulong, ulong>? OnStartRip { get; init; }
    public Action<Vcpu, ulong, ulong>? OnBlockDecoded { get; init; }
    public Action<Vcpu, int, bool, ulong>? OnEventDelivering { get; init; }
    public Func<Vcpu, bool>? OnInterruptBoundary { get; init; }
    public Func<Vcpu, bool>? OnSafePoint { get; init; }
    public Func<ulong, CodeOrigin?>? OnOriginOf { get; init; }
    public Action<Vcpu>? OnHostEvent { get; init; }

    public override bool Vmcall(Vcpu v) => OnVmcall?.Invoke(v) ?? false;
    public override ulong StartRip(Vcpu v, ulong rip) => OnStartRip?.Invoke(v, rip) ?? rip;
    public override void BlockDecoded(Vcpu v, ulong rip, ulong physical) => OnBlockDecoded?.Invoke(v, rip, physical);
    public override void EventDelivering(Vcpu v, int vector, bool raisedByInstruction, ulong frameRip) => OnEventDelivering?.Invoke(v, vector, raisedByInstruction, frameRip);
    public override bool InterruptBoundary(Vcpu v) => OnInterruptBoundary?.Invoke(v) ?? true;
    public override bool SafePoint(Vcpu v) => OnSafePoint?.Invoke(v) ?? true;
    public override CodeOrigin? OriginOf(ulong rip) => OnOriginOf?.Invoke(rip);
    public override void HostEvent(Vcpu v) => OnHostEvent?.Invoke(v);

    public override Hooks Implements =>
        (OnVmcall is null ? 0 : Hooks.Vmcall) | (OnStartRip is null ? 0 : Hooks.StartRip) | (OnBlockDecoded is null ? 0 : Hooks.BlockDecoded)
        | (OnEventDelivering is null ? 0 : Hooks.EventDelivering) | (OnInterruptBoundary is null ? 0 : Hooks.InterruptBoundary)
        | (OnSafePoint is null ? 0 : Hooks.SafePoint) | (OnOriginOf is null ? 0 : Hooks.OriginOf);
}

/// <summary>The attached agents, grouped by hook (copy on attach; read without locks).</summary>
internal sealed class AgentSet
{
    public readonly HostAgent[] All, Vmcall, StartRip, BlockDecoded, EventDelivering, InterruptBoundary, SafePoint, OriginOf;

    public static readonly AgentSet Empty = new([]);

    public AgentSet(HostAgent[] all)
    {
        All = all;
        var hooks = all.Select(a => (a, a.Implements)).ToArray();
        HostAgent[] With(Hooks h) => hooks.Where(p => (p.Implements & h) != 0).Select(p => p.a).ToArray();
        Vmcall = With(Hooks.Vmcall);
        StartRip = With(Hooks.StartRip);
        BlockDecoded = With(Hooks.BlockDecoded);
        EventDelivering = With(Hooks.EventDelivering);
        InterruptBoundary = With(Hooks.InterruptBoundary);
        SafePoint = With(Hooks.SafePoint);
        OriginOf = With(Hooks.OriginOf);
    }
}
