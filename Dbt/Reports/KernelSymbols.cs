namespace Harness.Dbt.Reports;

/// <summary>An ELF symbol with what <see cref="Kernel.KernelImage"/> leaves out: its type, size and section.</summary>
public sealed record ElfSymbol(string Name, ulong Value, ulong Size, ElfSymbolType Type, bool Global, int Section);

public enum ElfSymbolType { NoType = 0, Object = 1, Func = 2, Section = 3, File = 4 }

/// <summary>
/// The kernel image's symbols and sections for reports: which addresses are text, which symbols
/// are functions, and "symbol+offset" names for addresses (so that listings survive a rebuild that
/// moves code). Reads the ELF section headers and symbol table of the same file the machine loads.
/// </summary>
public sealed class KernelSymbols
{
    public IReadOnlyList<ElfSymbol> Symbols { get; }
    /// <summary>The executable section holding the kernel's code (.text).</summary>
    public ulong TextStart { get; }
    public ulong TextEnd { get; }
    /// <summary>Every allocated section's range (text, rodata, data, bss): addresses worth naming.</summary>
    public ulong ImageStart { get; }
    public ulong ImageEnd { get; }

    private readonly ElfSymbol[] byAddress;
    private readonly List<(string Name, ulong Start, ulong End)> sections;

    private KernelSymbols(List<ElfSymbol> symbols, List<(string, ulong, ulong)> sections, ulong textStart, ulong textEnd, ulong imageStart, ulong imageEnd)
    {
        this.sections = sections;
        Symbols = symbols;
        TextStart = textStart;
        TextEnd = textEnd;
        ImageStart = imageStart;
        ImageEnd = imageEnd;
        // Ties at one address: functions, then globals, then by name, so a name never depends on symbol-table order.
        byAddress = symbols.Where(s => s.Type is ElfSymbolType.Func or ElfSymbolType.Object or ElfSymbolType.NoType && s.Value != 0)
            .OrderBy(s => s.Value).ThenBy(s => s.Type == ElfSymbolType.Func ? 0 : 1).ThenBy(s => s.Global ? 0 : 1).ThenBy(s => s.Name, StringComparer.Ordinal)
            .ToArray();
    }

    public ulong? Address(string name) => Symbols.FirstOrDefault(s => s.Name == name && s.Type != ElfSymbolType.Section)?.Value;

    /// <summary>Functions in the text section, by address.</summary>
    public IEnumerable<ElfSymbol> Functions =>
        Symbols.Where(s => s.Type == ElfSymbolType.Func && s.Value >= TextStart && s.Value < TextEnd).DistinctBy(s => s.Value).OrderBy(s => s.Value);

    public bool InText(ulong a) => a >= TextStart && a < TextEnd;

    /// <summary>
    /// "name" or "name+0xoff" for an address in the image: inside a sized symbol (function, object),
    /// or after a label in the text. Anonymous data (a switch's jump table, string literals) gets its
    /// section's name without an offset, which a rebuild would shift. Null outside the image.
    /// </summary>
    public string? Name(ulong a)
    {
        if (a < ImageStart || a >= ImageEnd) return null;
        int lo = 0, hi = byAddress.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (byAddress[mid].Value <= a) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        if (found >= 0)
        {
            ulong at = byAddress[found].Value;
            while (found > 0 && byAddress[found - 1].Value == at) found--; // the preferred one of a tie
            var s = byAddress[found];
            if (a == s.Value) return s.Name;
            if (a - s.Value < s.Size || s.Size == 0 && InText(s.Value) && InText(a)) return $"{s.Name}+0x{a - s.Value:x}";
        }
        return sections.FirstOrDefault(x => a >= x.Start && a < x.End).Name ?? "image";
    }

    public static KernelSymbols FromElf(ReadOnlySpan<byte> f, string name)
    {
        var elf = Kernel.ElfSections.Read(f, name) ?? throw new FormatException($"{name}: no section headers");
        if (elf.TextEnd == 0) throw new FormatException($"{name}: no executable section");
        ulong imageStart = elf.Allocated.Count == 0 ? 0 : elf.Allocated.Min(x => x.Start), imageEnd = elf.Allocated.Count == 0 ? 0 : elf.Allocated.Max(x => x.End);
        return new KernelSymbols(elf.Symbols, elf.Allocated, elf.TextStart, elf.TextEnd, imageStart, imageEnd);
    }
}
