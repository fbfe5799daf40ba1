using Harness.Smp.Boot;

namespace Harness.Properties.Generators;

/// <summary>
/// Where a generated program lives: a ring-0 guest in the -2 GiB kernel alias
/// (<see cref="RingZeroGuest"/>'s kernel layout), so the DBT translates it as it does a kernel.
/// Each vCPU owns one private page (r15 points at it for the whole run: generated code never writes
/// r15); the vCPUs share one page, written only with locked commutative adds, so the final memory
/// does not depend on the interleaving.
/// </summary>
public static class Layout
{
    public const ulong Code = RingZeroGuest.KernelCode;
    public const ulong Data = RingZeroGuest.KernelData;
    public const int MaxVcpus = 4;

    /// <summary>vCPU n's private page.</summary>
    public static ulong Private(int n) => Data + 0x1000 + (ulong)n * 0x1000;

    public const ulong Shared = Data + 0x5000;
    /// <summary>Where in the shared page plain accesses go ([0, this) is for locked adds).</summary>
    public const ulong SharedPlainOffset = 0x800;
    /// <summary>The kernel's exception table (__ex_table): {fault rip, fixup rip} pairs.</summary>
    public const ulong ExTable = Data + 0x6000;
    public const int ExTableMax = 128;
    /// <summary>Read-only constants that RIP-relative loads read (filled at load).</summary>
    public const ulong Constants = Data + 0x6800;
    public const int ConstantWords = 64;
    /// <summary>The kernel's thread list (switchoff walks it to find every kernel stack): thread_list, then one struct thread per vCPU.</summary>
    public const ulong ThreadList = Data + 0x7000, Threads = Data + 0x7100, ThreadStride = 0x100;

    // Inside a private page.
    /// <summary>[0, OperandBytes): what generated memory operands ([r15 + disp]) address.</summary>
    public const int OperandBytes = 0xC00;
    /// <summary>Function pointers (indirect calls through memory) and switch tables, one slot per use (written at load).</summary>
    public const int Pointers = 0xC00, PointerSlots = 64;
    /// <summary>The worker's final registers (16 GPRs in Iced's order) and RFLAGS.</summary>
    public const int SaveArea = 0xE00, SavedFlags = SaveArea + 16 * 8;
    /// <summary>Ticks taken, faults fixed, the handlers' own cell, probe interrupts taken, and how many the worker waits for (written at load: a run's host plan).</summary>
    public const int Ticks = 0xF00, Faults = 0xF08, HandlerCell = 0xF10, Probes = 0xF18, ProbesExpected = 0xF20, AliasCell = 0xF28;

    /// <summary>An address nothing maps (the boot page tables map the low 4 GiB and the top 2 GiB): every access faults.</summary>
    public const ulong Unmapped = 0x0000_2000_0000_0000;

    /// <summary>The status a #PF with no fixup exits with (a fixup the DBT failed to register).</summary>
    public const uint NoFixupStatus = 0x66;

    /// <summary>
    /// The jumptable aliases: the main code stays below Code + AliasStride, and far function j of alias
    /// group g sits at Code + (j + 1) * AliasStride + g * AliasGroupBytes. The jumptable's level-1
    /// index is the target's bits 4..13 (Dbt/Dispatch/JumpTable), and its level-2 group index mixes in
    /// bits 12 up, which a multiple of 0x4000 only changes below bit 4: the functions of one group
    /// share both, so calling them in turn conflicts in level 1 and probes level 2.
    /// </summary>
    public const ulong AliasStride = 0x4000;
    public const int AliasGroupBytes = 0x40, AliasGroups = (int)(AliasStride / AliasGroupBytes), MaxAliases = 3;

    public static ulong AliasFunction(int group, int j) => Code + (ulong)(j + 1) * AliasStride + (ulong)(group * AliasGroupBytes);

    public const int StackBytes = 0x4000;
    public static ulong StackTop(int n) => RingZeroGuest.KernelStackTop + (ulong)n * RingZeroGuest.ApStackStride;
}
