using System.Buffers.Binary;

namespace Harness.Tests.Shared;

/// <summary>A tiny ELF64 writer: a header, program headers right after it, then each segment's bytes.</summary>
public sealed class ElfBuilder
{
    public sealed record Segment(ulong PAddr, ulong VAddr, byte[] Data, ulong MemSize, uint Type = 1, uint Flags = 7);

    public byte Class = 2, DataEncoding = 1;
    public ushort Type = 2, MachineId = 62, PhEntSize = 56;
    public ulong Entry = 0x100000;
    public ulong? PhOffOverride;
    public ushort? PhNumOverride;
    public List<Segment> Segments = [];
    /// <summary>Added to each segment's p_offset after layout (to point it past the file).</summary>
    public ulong OffsetSkew;
    /// <summary>Symbols for a .symtab (with its .strtab) after the segments; none: no section headers.</summary>
    public List<(string Name, ulong Value)> Symbols = [];

    public static ElfBuilder For(byte[] code, ulong at = 0x100000) => new() { Entry = at, Segments = { new Segment(at, at, code, (ulong)code.Length) } };

    /// <summary>A kernel-style image: code linked at vaddr (e.g. in the -2 GiB alias), loaded at paddr.</summary>
    public static ElfBuilder Linked(byte[] code, ulong vaddr, ulong paddr) => new() { Entry = vaddr, Segments = { new Segment(paddr, vaddr, code, (ulong)code.Length) } };

    public byte[] Build()
    {
        int phnum = Segments.Count;
        int dataStart = 64 + phnum * 56;
        var offsets = new List<int>();
        int pos = (dataStart + 15) & ~15;
        foreach (var s in Segments) { offsets.Add(pos); pos = (pos + s.Data.Length + 15) & ~15; }
        var f = new byte[pos];
        f[0] = 0x7F; f[1] = (byte)'E'; f[2] = (byte)'L'; f[3] = (byte)'F';
        f[4] = Class; f[5] = DataEncoding; f[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(16), Type);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(18), MachineId);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(20), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(24), Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(32), PhOffOverride ?? 64);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(52), 64);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(54), PhEntSize);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(56), PhNumOverride ?? (ushort)phnum);
        for (int i = 0; i < phnum; i++)
        {
            var s = Segments[i];
            var ph = f.AsSpan(64 + i * 56);
            BinaryPrimitives.WriteUInt32LittleEndian(ph, s.Type);
            BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], s.Flags);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], (ulong)offsets[i] + OffsetSkew);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], s.VAddr);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], s.PAddr);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)s.Data.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], s.MemSize);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[48..], 0x1000);
            s.Data.CopyTo(f.AsSpan(offsets[i]));
        }
        return Symbols.Count == 0 ? f : WithSymbols(f);
    }

    /// <summary>Appends a .strtab, a .symtab and three section headers (null, .symtab, .strtab).</summary>
    private byte[] WithSymbols(byte[] image)
    {
        var strtab = new List<byte> { 0 };
        var symtab = new byte[(Symbols.Count + 1) * 24];
        for (int i = 0; i < Symbols.Count; i++)
        {
            var e = symtab.AsSpan((i + 1) * 24);
            BinaryPrimitives.WriteUInt32LittleEndian(e, (uint)strtab.Count);
            strtab.AddRange(System.Text.Encoding.ASCII.GetBytes(Symbols[i].Name));
            strtab.Add(0);
            e[4] = 0x10; // STB_GLOBAL, STT_NOTYPE
            BinaryPrimitives.WriteUInt16LittleEndian(e[6..], 0xFFF1); // SHN_ABS
            BinaryPrimitives.WriteUInt64LittleEndian(e[8..], Symbols[i].Value);
        }
        int symOff = (image.Length + 7) & ~7, strOff = symOff + symtab.Length, shOff = (strOff + strtab.Count + 7) & ~7;
        var f = new byte[shOff + 3 * 64];
        image.CopyTo(f, 0);
        symtab.CopyTo(f, symOff);
        strtab.CopyTo(f, strOff);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(0x28), (ulong)shOff);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x3A), 64);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x3C), 3);
        var sym = f.AsSpan(shOff + 64);
        BinaryPrimitives.WriteUInt32LittleEndian(sym[4..], 2); // SHT_SYMTAB
        BinaryPrimitives.WriteUInt64LittleEndian(sym[0x18..], (ulong)symOff);
        BinaryPrimitives.WriteUInt64LittleEndian(sym[0x20..], (ulong)symtab.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(sym[0x28..], 2); // sh_link: .strtab
        BinaryPrimitives.WriteUInt64LittleEndian(sym[0x38..], 24);
        var str = f.AsSpan(shOff + 128);
        BinaryPrimitives.WriteUInt32LittleEndian(str[4..], 3); // SHT_STRTAB
        BinaryPrimitives.WriteUInt64LittleEndian(str[0x18..], (ulong)strOff);
        BinaryPrimitives.WriteUInt64LittleEndian(str[0x20..], (ulong)strtab.Count);
        return f;
    }
}
