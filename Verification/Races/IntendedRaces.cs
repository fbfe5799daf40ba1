using System.Buffers.Binary;
using Harness.Dbt.Kernel;

namespace Harness.Verification.Races;

/// <summary>
/// The guest kernel's annotated intended races (guest/kernel/kernel.h, as KCSAN's annotations):
/// variables marked __data_racy, which the linker puts between __data_racy_start and
/// __data_racy_end, and loads marked RACY_READ, whose addresses the kernel lists between
/// __racy_pcs_start and __racy_pcs_end. A race is intended when either access touches a racy
/// variable or is a marked load.
/// </summary>
public static class IntendedRaces
{
    public static Func<RaceAccess, RaceAccess, bool> For(KernelImage kernel, ReadOnlySpan<byte> elf)
    {
        ulong start = kernel.Symbol("__data_racy_start") ?? 0, end = kernel.Symbol("__data_racy_end") ?? 0;
        var pcs = new HashSet<ulong>();
        if (kernel.Symbol("__racy_pcs_start") is { } ps && kernel.Symbol("__racy_pcs_end") is { } pe)
            for (ulong va = ps; va + 8 <= pe; va += 8)
                if (FileOffset(elf, va) is { } off) pcs.Add(BinaryPrimitives.ReadUInt64LittleEndian(elf[(int)off..]));
        return (a, b) => Racy(a) || Racy(b);
        bool Racy(RaceAccess x) => pcs.Contains(x.NativeRip) || (x.Va < end && x.Va + (ulong)x.Size > start);
    }

    /// <summary>Where va's bytes are in the ELF file (a PT_LOAD segment's file part), or null.</summary>
    private static ulong? FileOffset(ReadOnlySpan<byte> elf, ulong va)
    {
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(elf[0x20..]);
        int phentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x36..]), phnum = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x38..]);
        for (int i = 0; i < phnum; i++)
        {
            var ph = elf[(int)(phoff + (ulong)(i * phentsize))..];
            if (BinaryPrimitives.ReadUInt32LittleEndian(ph) != 1) continue; // PT_LOAD
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]), vaddr = BinaryPrimitives.ReadUInt64LittleEndian(ph[16..]);
            ulong filesz = BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]);
            if (va >= vaddr && va + 8 <= vaddr + filesz) return offset + (va - vaddr);
        }
        return null;
    }
}
