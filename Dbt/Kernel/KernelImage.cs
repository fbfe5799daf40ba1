namespace Harness.Dbt.Kernel;

/// <summary>
/// What the DBT knows of the kernel beyond its bytes in memory: the ELF symbol table (for the
/// exception tables: <c>__ex_table_start</c>, <c>__ex_table_end</c>, <c>extables</c>). Read from the
/// same ELF file the machine loaded (<see cref="ElfSections"/>).
/// </summary>
public sealed class KernelImage
{
    public IReadOnlyDictionary<string, ulong> Symbols { get; }

    private KernelImage(Dictionary<string, ulong> symbols) => Symbols = symbols;

    public ulong? Symbol(string name) => Symbols.TryGetValue(name, out ulong v) ? v : null;

    /// <summary>Parses the symbol table of an ELF64 little-endian file; an image without one gives an empty table.</summary>
    public static KernelImage FromElf(ReadOnlySpan<byte> f, string name)
    {
        var symbols = new Dictionary<string, ulong>();
        foreach (var s in ElfSections.Read(f, name)?.Symbols ?? []) symbols.TryAdd(s.Name, s.Value);
        return new KernelImage(symbols);
    }
}
