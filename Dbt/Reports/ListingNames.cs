using Harness.Dbt.Dispatch;
using Harness.Dbt.Translate;

namespace Harness.Dbt.Reports;

/// <summary>
/// Names for listings that hold across kernel rebuilds and cache layouts: kernel addresses as
/// symbol+offset, translated blocks as "tx" plus their native name, edge stubs as "edge" plus their
/// native target, and the shared stubs by role.
/// </summary>
public sealed class ListingNames : IListingNames
{
    private readonly KernelDbt dbt;
    private readonly KernelSymbols symbols;
    private readonly Dictionary<ulong, TranslatedBlock> blocks;
    private readonly Dictionary<ulong, ulong> fixups;

    public ListingNames(KernelDbt dbt, KernelSymbols symbols, IEnumerable<(ulong Fault, ulong Fixup)> exceptionEntries)
    {
        this.dbt = dbt;
        this.symbols = symbols;
        blocks = dbt.Translator.Blocks.ToDictionary(b => b.CacheStart);
        fixups = exceptionEntries.ToDictionary(e => e.Fault, e => e.Fixup);
    }

    public string Native(ulong a) => symbols.Name(a) ?? $"0x{a:x}";

    public string? Name(ulong a)
    {
        if (!dbt.Cache.Contains(a)) return symbols.Name(a);
        if (blocks.TryGetValue(a, out var b))
            return b.EntrySlotDelta is int d ? $"tx entry(slot rsp{d:+#;-#;+0}) {Native(b.NativeStart)}" : $"tx {Native(b.NativeStart)}";
        if (dbt.Edges.Lookup(a) is { } e)
            return e.Kind == EdgeKind.CallOut
                ? $"call-out {e.What?.Split(' ')[0]} -> {Native(e.Target)}"
                : $"edge {e.Kind.ToString().ToLowerInvariant()} -> {Native(e.Target)}";
        var c = dbt.Cache;
        if (c.Level2.EntryName(a) is { } level2) return level2;
        if (a == c.ExitStub) return "exit-stub";
        if (a == c.DeadEnd) return "dead-end";
        var inner = blocks.Values.FirstOrDefault(x => a - x.CacheStart < (ulong)x.CacheLength);
        return inner is null ? "cache" : $"{Name(inner.CacheStart)}+0x{a - inner.CacheStart:x}";
    }

    public string? Note(ulong cacheAddress) =>
        fixups.TryGetValue(cacheAddress, out ulong fixup) ? $"exception table: fixup at <{Name(fixup)}>" : null;
}
