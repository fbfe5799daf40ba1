using System.Buffers.Binary;
using System.Text;
using Harness.Dbt.Reports;

namespace Harness.Dbt.Kernel;

/// <summary>
/// The section headers and symbol table of an ELF64 little-endian file: what the DBT (exception
/// tables) and the reports (text range, function symbols) need beyond the program headers the
/// machine's loader reads. Iced has no ELF reader and this is the few lines of section-header walking
/// it takes; one reader, so a malformed image gets the same errors wherever it is read.
/// </summary>
internal sealed class ElfSections
{
    public readonly List<ElfSymbol> Symbols = new();
    /// <summary>Every allocated, non-empty section: (name, start, end).</summary>
    public readonly List<(string Name, ulong Start, ulong End)> Allocated = new();
    /// <summary>The largest executable section (the kernel's text: boot code may sit in a small one); (0, 0) if none.</summary>
    public ulong TextStart, TextEnd;

    /// <summary>Reads f; null if it has no section headers at all, a FormatException naming the file if they are malformed.</summary>
    public static ElfSections? Read(ReadOnlySpan<byte> f, string name)
    {
        if (f.Length < 64 || f[0] != 0x7F || f[1] != (byte)'E' || f[2] != (byte)'L' || f[3] != (byte)'F' || f[4] != 2)
            throw new FormatException($"{name}: not an ELF64 file");
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(f[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(f[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(f[0x3C..]);
        if (shoff == 0 || shnum == 0) return null;
        if (shentsize < 64 || shoff + (ulong)(shnum * shentsize) > (ulong)f.Length)
            throw new FormatException($"{name}: section headers at 0x{shoff:x} ({shnum} x {shentsize} bytes) lie outside the file");
        ReadOnlySpan<byte> Section(ReadOnlySpan<byte> file, int i) => file.Slice((int)shoff + i * shentsize, 64);

        var r = new ElfSections();
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
                r.Allocated.Add((Name(names, BinaryPrimitives.ReadUInt32LittleEndian(sh)) ?? $"section{i}", addr, addr + size));
                if ((flags & Exec) != 0 && size > r.TextEnd - r.TextStart) (r.TextStart, r.TextEnd) = (addr, addr + size);
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
                if (Name(strings, BinaryPrimitives.ReadUInt32LittleEndian(sym)) is not { } symbol) continue;
                byte info = sym[4];
                r.Symbols.Add(new ElfSymbol(symbol, BinaryPrimitives.ReadUInt64LittleEndian(sym[8..]), BinaryPrimitives.ReadUInt64LittleEndian(sym[16..]),
                    (ElfSymbolType)(info & 0xF), (info >> 4) != 0, BinaryPrimitives.ReadUInt16LittleEndian(sym[6..])));
            }
        }
        return r;
    }

    /// <summary>The NUL-terminated name at offset in a string table; null for offset 0, an empty name or one outside the table.</summary>
    private static string? Name(ReadOnlySpan<byte> table, uint offset)
    {
        if (offset == 0 || offset >= table.Length) return null;
        int end = table[(int)offset..].IndexOf((byte)0);
        return end <= 0 ? null : Encoding.ASCII.GetString(table.Slice((int)offset, end));
    }
}
