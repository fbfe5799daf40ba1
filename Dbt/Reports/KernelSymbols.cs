using System.Buffers.Binary;
using System.Text;

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
        if (f.Length < 64 || f[0] != 0x7F || f[1] != (byte)'E' || f[2] != (byte)'L' || f[3] != (byte)'F' || f[4] != 2)
            throw new FormatException($"{name}: not an ELF64 file");
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(f[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(f[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(f[0x3C..]);
        if (shoff == 0 || shnum == 0 || shentsize < 64 || shoff + (ulong)(shnum * shentsize) > (ulong)f.Length)
            throw new FormatException($"{name}: no usable section headers");
        ReadOnlySpan<byte> Section(ReadOnlySpan<byte> file, int i) => file.Slice((int)shoff + i * shentsize, 64);

        ulong textStart = 0, textEnd = 0, imageStart = ulong.MaxValue, imageEnd = 0;
        var symbols = new List<ElfSymbol>();
        var sections = new List<(string, ulong, ulong)>();
        int shstrndx = BinaryPrimitives.ReadUInt16LittleEndian(f[0x3E..]);
        ReadOnlySpan<byte> names = default;
        if (shstrndx < shnum)
        {
            var nh = Section(f, shstrndx);
            ulong no = BinaryPrimitives.ReadUInt64LittleEndian(nh[0x18..]), ns = BinaryPrimitives.ReadUInt64LittleEndian(nh[0x20..]);
            if (no + ns <= (ulong)f.Length) names = f.Slice((int)no, (int)ns);
        }
        for (int i = 0; i < shnum; i++)
        {
            var sh = Section(f, i);
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]);
            ulong flags = BinaryPrimitives.ReadUInt64LittleEndian(sh[8..]), addr = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x10..]);
            ulong off = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x18..]), size = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x20..]);
            const ulong Alloc = 2, Exec = 4;
            if ((flags & Alloc) != 0 && size > 0)
            {
                imageStart = Math.Min(imageStart, addr);
                imageEnd = Math.Max(imageEnd, addr + size);
                uint nameOff = BinaryPrimitives.ReadUInt32LittleEndian(sh);
                int nend = nameOff < names.Length ? names[(int)nameOff..].IndexOf((byte)0) : -1;
                sections.Add((nend > 0 ? Encoding.ASCII.GetString(names.Slice((int)nameOff, nend)) : $"section{i}", addr, addr + size));
                // The largest executable section is the kernel's text (boot code may sit in a small one).
                if ((flags & Exec) != 0 && size > textEnd - textStart) (textStart, textEnd) = (addr, addr + size);
            }
            if (type != 2) continue; // SHT_SYMTAB
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            ulong entsize = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x38..]);
            if (link >= shnum || entsize < 24 || off + size > (ulong)f.Length)
                throw new FormatException($"{name}: symbol table section {i} is malformed");
            var str = Section(f, link);
            ulong soff = BinaryPrimitives.ReadUInt64LittleEndian(str[0x18..]), ssize = BinaryPrimitives.ReadUInt64LittleEndian(str[0x20..]);
            if (soff + ssize > (ulong)f.Length) throw new FormatException($"{name}: string table section {link} lies outside the file");
            var strings = f.Slice((int)soff, (int)ssize);
            for (ulong e = off; e + 24 <= off + size; e += entsize)
            {
                var sym = f.Slice((int)e, 24);
                uint nameOff = BinaryPrimitives.ReadUInt32LittleEndian(sym);
                if (nameOff == 0 || nameOff >= ssize) continue;
                int end = strings[(int)nameOff..].IndexOf((byte)0);
                if (end <= 0) continue;
                byte info = sym[4];
                symbols.Add(new ElfSymbol(Encoding.ASCII.GetString(strings.Slice((int)nameOff, end)),
                    BinaryPrimitives.ReadUInt64LittleEndian(sym[8..]), BinaryPrimitives.ReadUInt64LittleEndian(sym[16..]),
                    (ElfSymbolType)(info & 0xF), (info >> 4) != 0, BinaryPrimitives.ReadUInt16LittleEndian(sym[6..])));
            }
        }
        if (textEnd == 0) throw new FormatException($"{name}: no executable section");
        return new KernelSymbols(symbols, sections, textStart, textEnd, imageStart, imageEnd);
    }
}
