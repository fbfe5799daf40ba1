using System.Buffers.Binary;
using System.Text;

namespace Harness.Dbt.Kernel;

/// <summary>
/// What the DBT knows of the kernel beyond its bytes in memory: the ELF symbol table (for the
/// exception tables: <c>__ex_table_start</c>, <c>__ex_table_end</c>, <c>extables</c>). Read from the
/// same ELF file the machine loaded. Iced has no ELF reader and the machine's loader reads program
/// headers only, so this is the few lines of section-header walking it takes.
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
        if (f.Length < 64 || f[0] != 0x7F || f[1] != (byte)'E' || f[2] != (byte)'L' || f[3] != (byte)'F' || f[4] != 2)
            throw new FormatException($"{name}: not an ELF64 file");
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(f[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(f[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(f[0x3C..]);
        if (shoff == 0 || shnum == 0) return new KernelImage(symbols);
        if (shentsize < 64 || shoff + (ulong)(shnum * shentsize) > (ulong)f.Length)
            throw new FormatException($"{name}: section headers at 0x{shoff:x} ({shnum} x {shentsize} bytes) lie outside the file");
        for (int i = 0; i < shnum; i++)
        {
            var sh = f.Slice((int)shoff + i * shentsize, 64);
            if (BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]) != 2) continue; // SHT_SYMTAB
            ulong off = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x18..]), size = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x20..]);
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            ulong entsize = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x38..]);
            if (link >= shnum || entsize < 24 || off + size > (ulong)f.Length)
                throw new FormatException($"{name}: symbol table section {i} is malformed");
            var str = f.Slice((int)shoff + link * shentsize, 64);
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
                string s = Encoding.ASCII.GetString(strings.Slice((int)nameOff, end));
                symbols.TryAdd(s, BinaryPrimitives.ReadUInt64LittleEndian(sym[8..]));
            }
        }
        return new KernelImage(symbols);
    }
}
