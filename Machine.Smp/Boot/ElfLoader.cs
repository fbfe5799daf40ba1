using System.Buffers.Binary;

namespace Harness.Smp.Boot;

/// <summary>A bad image: the message names the file and what is wrong with it, and where.</summary>
public sealed class ImageException(string message) : Exception(message);

public sealed record LoadSegment(ulong PhysAddr, ulong VirtAddr, ulong FileSize, ulong MemSize, uint Flags);

public sealed record ElfImage(string Name, ulong Entry, IReadOnlyList<LoadSegment> Segments);

/// <summary>
/// Parses an ELF64 x86-64 ET_EXEC image and loads its PT_LOAD segments at their physical
/// addresses. Hand-written rather than a library: the format subset is tiny (header and program
/// headers), and every check must produce a message that names the field and the offset.
/// </summary>
public static class ElfLoader
{
    private const uint PtLoad = 1;

    public static ElfImage Parse(ReadOnlySpan<byte> f, string name)
    {
        void Fail(string what) => throw new ImageException($"{name}: {what}");
        if (f.Length < 64) Fail($"file is {f.Length} bytes, too short for an ELF64 header (64 bytes)");
        if (f[0] != 0x7F || f[1] != (byte)'E' || f[2] != (byte)'L' || f[3] != (byte)'F') Fail("not an ELF file (bad magic at offset 0)");
        if (f[4] != 2) Fail($"EI_CLASS is {f[4]} at offset 4: only ELF64 (2) is supported");
        if (f[5] != 1) Fail($"EI_DATA is {f[5]} at offset 5: only little-endian (1) is supported");
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(f[16..]);
        ushort machine = BinaryPrimitives.ReadUInt16LittleEndian(f[18..]);
        if (type != 2) Fail($"e_type is {type} at offset 16: only ET_EXEC (2) images can be booted");
        if (machine != 62) Fail($"e_machine is {machine} at offset 18: only x86-64 (62) is supported");
        ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(f[24..]);
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(f[32..]);
        ushort phentsize = BinaryPrimitives.ReadUInt16LittleEndian(f[54..]);
        ushort phnum = BinaryPrimitives.ReadUInt16LittleEndian(f[56..]);
        if (phnum == 0) Fail("no program headers (e_phnum = 0)");
        if (phentsize < 56) Fail($"e_phentsize is {phentsize} at offset 54, smaller than an ELF64 program header (56)");
        if (phoff > (ulong)f.Length || (ulong)phnum * phentsize > (ulong)f.Length - phoff)
            Fail($"program headers at offset 0x{phoff:x} ({phnum} x {phentsize} bytes) run past the end of the file ({f.Length} bytes)");
        var segs = new List<LoadSegment>();
        var headers = new List<int>(); // the program header index of each segment, for messages
        for (int i = 0; i < phnum; i++)
        {
            var ph = f.Slice((int)phoff + i * phentsize, 56);
            uint ptype = BinaryPrimitives.ReadUInt32LittleEndian(ph);
            if (ptype != PtLoad) continue;
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(ph[4..]);
            ulong off = BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]);
            ulong vaddr = BinaryPrimitives.ReadUInt64LittleEndian(ph[16..]);
            ulong paddr = BinaryPrimitives.ReadUInt64LittleEndian(ph[24..]);
            ulong filesz = BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]);
            ulong memsz = BinaryPrimitives.ReadUInt64LittleEndian(ph[40..]);
            if (filesz > memsz) Fail($"program header {i}: p_filesz 0x{filesz:x} exceeds p_memsz 0x{memsz:x}");
            if (off > (ulong)f.Length || filesz > (ulong)f.Length - off)
                Fail($"program header {i}: file range [0x{off:x}, 0x{off + filesz:x}) runs past the end of the file ({f.Length} bytes)");
            if (memsz == 0) continue;
            if (paddr + memsz < paddr) Fail($"program header {i}: physical range 0x{paddr:x} + 0x{memsz:x} wraps around the address space");
            segs.Add(new LoadSegment(paddr, vaddr, filesz, memsz, flags));
            headers.Add(i);
        }
        if (segs.Count == 0) Fail("no PT_LOAD segment with contents");
        // Loaded in order, a later segment would silently overwrite an earlier one: refuse instead.
        var byAddress = Enumerable.Range(0, segs.Count).OrderBy(k => segs[k].PhysAddr).ToList();
        for (int k = 1; k < byAddress.Count; k++)
        {
            var (a, b) = (segs[byAddress[k - 1]], segs[byAddress[k]]);
            if (b.PhysAddr < a.PhysAddr + a.MemSize)
            {
                int ha = headers[byAddress[k - 1]], hb = headers[byAddress[k]];
                Fail($"program headers {Math.Min(ha, hb)} and {Math.Max(ha, hb)} overlap in physical memory: " +
                     $"[0x{a.PhysAddr:x}, 0x{a.PhysAddr + a.MemSize:x}) and [0x{b.PhysAddr:x}, 0x{b.PhysAddr + b.MemSize:x})");
            }
        }
        if (!segs.Any(s => entry >= s.VirtAddr && entry < s.VirtAddr + s.MemSize))
            Fail($"entry point 0x{entry:x} lies outside every loadable segment");
        return new ElfImage(name, entry, segs);
    }

    /// <summary>Copies the image's segments into guest RAM at p_paddr, after checking they fit the machine.</summary>
    public static ElfImage Load(Machine m, ReadOnlySpan<byte> file, string name)
    {
        var img = Parse(file, name);
        ulong ram = m.Memory.Size;
        int i = 0;
        foreach (var s in img.Segments)
        {
            ulong end = s.PhysAddr + s.MemSize;
            string range = $"segment {i} [0x{s.PhysAddr:x}, 0x{end:x})";
            if (s.PhysAddr < BootLayout.ImageBase)
                throw new ImageException($"{name}: {range} starts below 1 MiB, which the machine keeps for its own tables (p_paddr must be >= 0x{BootLayout.ImageBase:x})");
            if (s.MemSize > ram || end < s.PhysAddr || end > ram)
                throw new ImageException($"{name}: {range} lies outside RAM ({ram / (1024 * 1024)} MiB); use --memory to give the machine more");
            if (s.PhysAddr < m.ReservedBase + m.ReservedSize && end > m.ReservedBase)
                throw new ImageException($"{name}: {range} overlaps the reserved region [0x{m.ReservedBase:x}, 0x{m.ReservedBase + m.ReservedSize:x})");
            i++;
        }
        // Parse validated every offset against the file: the copies cannot fail now.
        var ph = ReadPhdrs(file);
        foreach (var (off, s) in ph)
        {
            m.Memory.Write(s.PhysAddr, file.Slice((int)off, (int)s.FileSize));
            m.Memory.Clear(s.PhysAddr + s.FileSize, s.MemSize - s.FileSize);
        }
        return img;
    }

    private static List<(ulong off, LoadSegment s)> ReadPhdrs(ReadOnlySpan<byte> f)
    {
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(f[32..]);
        ushort phentsize = BinaryPrimitives.ReadUInt16LittleEndian(f[54..]);
        ushort phnum = BinaryPrimitives.ReadUInt16LittleEndian(f[56..]);
        var list = new List<(ulong, LoadSegment)>();
        for (int i = 0; i < phnum; i++)
        {
            var ph = f.Slice((int)phoff + i * phentsize, 56);
            if (BinaryPrimitives.ReadUInt32LittleEndian(ph) != PtLoad) continue;
            ulong memsz = BinaryPrimitives.ReadUInt64LittleEndian(ph[40..]);
            if (memsz == 0) continue;
            list.Add((BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]), new LoadSegment(
                BinaryPrimitives.ReadUInt64LittleEndian(ph[24..]), BinaryPrimitives.ReadUInt64LittleEndian(ph[16..]),
                BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]), memsz, BinaryPrimitives.ReadUInt32LittleEndian(ph[4..]))));
        }
        return list;
    }
}
