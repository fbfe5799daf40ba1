namespace Harness.Dbt.Cache;

/// <summary>
/// Where the DBT's per-CPU words live: GS-relative, the way a Linux x86-64 module's per-CPU
/// variables are. Translated code is shared by all vCPUs, so anything per CPU (tx-nextpc-loc, the
/// jumptable) is reached through the one register that differs per CPU in kernel mode: GS base.
/// The guest kernel reserves the words (<c>struct percpu.module_percpu</c> at offset 40,
/// docs/kernel-contract.md section 10); an image that never sets a GS base gets one from the DBT
/// (<see cref="CodeCache.OwnGsBase"/>).
///
/// Why not per-vCPU stubs with absolute slots (the first design): a thread interrupted between the exit
/// stub's popfq and its jmp may be preempted and resumed on another vCPU; its jmp must then read the
/// slot the iretq path restored on the new vCPU, which a GS-relative slot is and an absolute one is not.
/// </summary>
public sealed record PerCpu(int Offset = PerCpu.DefaultOffset)
{
    public const int DefaultOffset = 40;
    /// <summary>Bytes of per-CPU words the DBT uses from <see cref="Offset"/>.</summary>
    public const int Bytes = 16;

    /// <summary>gs:[TxNextPcLoc]: where the dispatcher leaves tx-nextpc for the exit stub's jmp.</summary>
    public ulong TxNextPcLoc => (ulong)Offset;
    /// <summary>gs:[JumpTablePtr]: this CPU's jumptable (<see cref="Indirect.JumpTable"/>).</summary>
    public ulong JumpTablePtr => (ulong)Offset + 8;
}
