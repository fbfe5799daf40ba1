namespace Harness.Dbt.Dispatch;

/// <summary>Which kind of dispatcher vmcall a vCPU made (<see cref="DispatcherEntry"/>).</summary>
public enum DispatcherEntryKind
{
    /// <summary>An edge stub of a direct branch (or a block's fall-through): the branch was taken.</summary>
    Edge,
    /// <summary>The level-2 jumptable routine's miss: the indirect branch was taken.</summary>
    JumpTableMiss,
    /// <summary>A call-out stub: the emulated instruction at <see cref="DispatcherEntry.Native"/> has not run yet.</summary>
    CallOut,
}

/// <summary>
/// One dispatcher entry as <see cref="DbtOptions.OnDispatcherEntry"/> sees it, before the dispatcher
/// acts: the vCPU is at the native boundary Native (interrupts off), with Words words on its stack
/// above the native RSP, the lowest of them the native RFLAGS saved by the entry's pushfq (edge and
/// call-out stubs: [flags]; the jumptable miss: [flags, target]). Every other register already holds
/// its native value.
/// </summary>
public readonly record struct DispatcherEntry(DispatcherEntryKind Kind, ulong Site, ulong Native, int Words, Edge? Edge)
{
    /// <summary>The native instruction at Native has already been counted by a segment but not run (a call-out emulates it).</summary>
    public bool NativePending => Kind == DispatcherEntryKind.CallOut;
}
