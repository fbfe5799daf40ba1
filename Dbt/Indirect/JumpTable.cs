using Harness.Smp;

namespace Harness.Dbt.Indirect;

/// <summary>
/// One vCPU's jumptable for indirect branches (the paper's section on indirect branches): a
/// direct-mapped level 1 and a level 2 probed linearly over up to <see cref="Probe"/> entries, the
/// most recently found moved to the front. Entries are {native, tx} pairs of 8 bytes each.
///
/// Both levels are indexed by address bits that cost two instructions to extract, so the inline
/// level-1 probe at every indirect branch stays short: level 1 by bits 4..13 of the target
/// (<c>target &amp; 0x3FF0</c> is the entry's byte offset), level 2 by bits 4..13 of
/// <c>target ^ (target &gt;&gt; 12)</c>. Level 2 has Probe - 1 spare entries at its end instead of
/// wrapping, so a probe never needs a bounds check.
///
/// Translated code reads it with interrupts cleared (an interrupt handler on the same CPU could
/// otherwise replace an entry between the hit test and the read of tx); the host writes it only from
/// the dispatcher, on the CPU that owns it, also with that CPU's interrupts cleared. So no lock.
/// </summary>
public static class JumpTable
{
    public const int L1Entries = 1024, L2Entries = 1024, Probe = 4, EntryBytes = 16;
    public const uint IndexMask = 0x3FF0;
    public const int L2Offset = L1Entries * EntryBytes;
    public const ulong Bytes = (ulong)(L1Entries + L2Entries + Probe - 1) * EntryBytes;

    public static uint L1Index(ulong native) => (uint)native & IndexMask;
    public static uint L2Index(ulong native) => (uint)(native ^ (native >> 12)) & IndexMask;

    /// <summary>Installs native → tx in both levels of the table at va (through v's page tables).</summary>
    public static void Insert(Vcpu v, ulong table, ulong native, ulong tx)
    {
        ulong e1 = table + L1Index(native);
        v.Write64(e1, native);
        v.Write64(e1 + 8, tx);
        ulong g = table + L2Offset + L2Index(native);
        // Already present in the group: nothing to shift (a level-1 conflict brought us here).
        for (int k = 0; k < Probe; k++)
            if (v.Read64(g + (ulong)(k * EntryBytes)) == native) { v.Write64(g + (ulong)(k * EntryBytes) + 8, tx); return; }
        for (int k = Probe - 1; k > 0; k--)
        {
            ulong from = g + (ulong)((k - 1) * EntryBytes), to = g + (ulong)(k * EntryBytes);
            v.Write64(to, v.Read64(from));
            v.Write64(to + 8, v.Read64(from + 8));
        }
        v.Write64(g, native);
        v.Write64(g + 8, tx);
    }
}
