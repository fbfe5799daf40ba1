using Harness.Dbt.Cache;
using Harness.Smp;
using Harness.Smp.Boot;
using Harness.Smp.Memory;

namespace Harness.Dbt.Kernel;

/// <summary>
/// Exception-table registration (the paper's handling of Linux's copy_from_user fixups): the kernel
/// finds a fixup by the faulting RIP, which under translation is a code-cache address. For every
/// translated copy of an instruction that has a fixup in one of the kernel's tables (the built-in
/// <c>__ex_table</c>, and tables registered at run time), the DBT adds {cache address of the copy,
/// cache address of the fixup's translation} to its own table, which the kernel registered at boot
/// through <c>exception_table_register</c> (the boot-info block hands it over as a boot module's
/// table: docs/boot-protocol.md). The table has a fixed capacity and starts zeroed; an entry is
/// published by writing its fixup, then (after a fence) its faulting RIP, so the kernel's lock-free
/// lookup never sees a half-written entry. Entries are added under the translator lock.
/// </summary>
public sealed class ExceptionTables
{
    private const int EntryBytes = 16, MaxRegistered = 8;
    private readonly CodeCache cache;
    private readonly ulong? builtinStart, builtinEnd, registered;
    private readonly int capacity;
    private int count;
    private (ulong Fault, ulong Fixup)[]? builtin;

    public ulong Table { get; }
    public int Count => Volatile.Read(ref count);

    internal ExceptionTables(Machine machine, CodeCache cache, KernelImage? kernel, int capacity)
    {
        this.cache = cache;
        this.capacity = capacity;
        builtinStart = kernel?.Symbol("__ex_table_start");
        builtinEnd = kernel?.Symbol("__ex_table_end");
        registered = kernel?.Symbol("extables");
        Table = cache.Data.Allocate((ulong)(capacity * EntryBytes), PhysicalMemory.PageSize);
        machine.Memory.WriteU64(BootLayout.BootInfo + 48, Table);
        machine.Memory.WriteU64(BootLayout.BootInfo + 56, (ulong)capacity);
    }

    /// <summary>The fixup of a native instruction, if any table of the kernel has one (read through v).</summary>
    public bool TryGetFixup(Vcpu v, ulong nativeRip, out ulong fixup)
    {
        fixup = 0;
        if (builtinStart is ulong s && builtinEnd is ulong e)
        {
            builtin ??= ReadTable(v, s, (int)((e - s) / EntryBytes));
            foreach (var (f, x) in builtin) if (f == nativeRip) { fixup = x; return true; }
        }
        if (registered is ulong r)
        {
            // struct { const struct ex_entry *entries; size_t n; } extables[8] (trap.c)
            for (int i = 0; i < MaxRegistered; i++)
            {
                ulong entries = v.Read64(r + (ulong)(i * 16)), n = v.Read64(r + (ulong)(i * 16 + 8));
                if (entries == 0 || entries == Table || n > 4096) continue;
                for (ulong k = 0; k < n; k++)
                    if (v.Read64(entries + k * EntryBytes) == nativeRip) { fixup = v.Read64(entries + k * EntryBytes + 8); return true; }
            }
        }
        return false;
    }

    private static (ulong, ulong)[] ReadTable(Vcpu v, ulong at, int n)
    {
        var t = new (ulong, ulong)[n];
        for (int i = 0; i < n; i++) t[i] = (v.Read64(at + (ulong)(i * EntryBytes)), v.Read64(at + (ulong)(i * EntryBytes) + 8));
        return t;
    }

    /// <summary>
    /// Empties the table (cache wipe: zeroed entries match no RIP), then lists the built-in table's
    /// native pairs again here: a flush can land while the kernel's lookup is between the built-in
    /// table and the registered ones with the faulting RIP it holds just rewritten to native, and the
    /// native fault must still find its fixup.
    /// </summary>
    internal void Clear(Vcpu v)
    {
        cache.WriteData(Table, new byte[capacity * EntryBytes]);
        Volatile.Write(ref count, 0);
        if (builtinStart is ulong s && builtinEnd is ulong e)
        {
            builtin ??= ReadTable(v, s, (int)((e - s) / EntryBytes));
            foreach (var (f, x) in builtin) Register(f, x);
        }
    }

    /// <summary>Adds {fault, fixup} (both code-cache addresses); caller holds the translator lock.</summary>
    internal void Register(ulong fault, ulong fixup)
    {
        if (count >= capacity)
            throw new Translate.TranslationException($"the DBT's exception table is full ({capacity} entries): raise DbtOptions.ExceptionTableCapacity");
        ulong at = Table + (ulong)(count * EntryBytes);
        cache.WriteData(at + 8, BitConverter.GetBytes(fixup));
        Interlocked.MemoryBarrier();
        cache.WriteData(at, BitConverter.GetBytes(fault));
        Volatile.Write(ref count, count + 1);
    }
}
