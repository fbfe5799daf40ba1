namespace Harness.Dbt.Kernel;

/// <summary>
/// The guest kernel's data layout the DBT reads (guest/kernel/kernel.h, where static assertions pin
/// the same numbers): struct thread, walked by switchoff to rewrite kernel stacks.
/// </summary>
internal static class KernelLayout
{
    public const ulong ThreadRsp = 0, ThreadKstack = 32, ThreadKstackTop = 40, ThreadAllNext = 120;
}

/// <summary>
/// What the DBT knows of the kernel beyond its bytes in memory: the ELF symbol table (for the
/// exception tables: <c>__ex_table_start</c>, <c>__ex_table_end</c>, <c>extables</c>; switchoff:
/// <c>thread_list</c>, <c>exception_fixup</c>). Read from the
/// same ELF file the machine loaded (<see cref="ElfSections"/>).
/// </summary>
public sealed class KernelImage
{
    public IReadOnlyDictionary<string, ulong> Symbols { get; }
    private readonly Dictionary<string, ulong> sizes;

    private KernelImage(Dictionary<string, ulong> symbols, Dictionary<string, ulong> sizes) => (Symbols, this.sizes) = (symbols, sizes);

    public ulong? Symbol(string name) => Symbols.TryGetValue(name, out ulong v) ? v : null;

    /// <summary>[start, end) of a sized symbol (a function), or null.</summary>
    public (ulong Start, ulong End)? Range(string name) =>
        Symbols.TryGetValue(name, out ulong v) && sizes.TryGetValue(name, out ulong n) && n > 0 ? (v, v + n) : null;

    /// <summary>A kernel known by a few symbols (generated guests that have no ELF file: Properties/); sizes for the functions the DBT needs as ranges.</summary>
    public static KernelImage FromSymbols(IReadOnlyDictionary<string, ulong> symbols, IReadOnlyDictionary<string, ulong>? sizes = null) =>
        new(new Dictionary<string, ulong>(symbols), symbols.Keys.ToDictionary(k => k, k => sizes is not null && sizes.TryGetValue(k, out ulong n) ? n : 0UL));

    /// <summary>Parses the symbol table of an ELF64 little-endian file; an image without one gives an empty table.</summary>
    public static KernelImage FromElf(ReadOnlySpan<byte> f, string name)
    {
        var symbols = new Dictionary<string, ulong>();
        var sizes = new Dictionary<string, ulong>();
        foreach (var s in ElfSections.Read(f, name)?.Symbols ?? [])
            if (symbols.TryAdd(s.Name, s.Value)) sizes[s.Name] = s.Size;
        return new KernelImage(symbols, sizes);
    }
}
