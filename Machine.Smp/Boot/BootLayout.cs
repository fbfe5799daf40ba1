using Harness.Smp.Cpu;
using Harness.Smp.Memory;

namespace Harness.Smp.Boot;

/// <summary>
/// What the machine puts below 1 MiB before the BSP starts (docs/boot-protocol.md): page tables
/// for the identity map of 4 GiB and the -2 GiB kernel alias (1 GiB pages), a GDT, the boot-info
/// block with the AP mailboxes, and the boot stack.
/// </summary>
public static class BootLayout
{
    public const ulong Pml4 = 0x1000, PdptLow = 0x2000, PdptHigh = 0x3000, Gdt = 0x4000, BootInfo = 0x5000, CommandLine = 0x6000;
    /// <summary>Longest command line, without its terminating NUL.</summary>
    public const int CommandLineMax = 4095;
    public const ulong BootStackTop = 0x80000;
    public const ulong ImageBase = 0x100000;
    public const ulong KernelAlias = 0xFFFF_FFFF_8000_0000;
    public const ulong Magic = 0x1BADB007;
    public const uint Version = 1;
    public const int MailboxOffset = 64, MailboxEntrySize = 24, MaxCpus = 64;
    public const ushort KernelCs = 0x08, KernelDs = 0x10;

    public static BootState Write(PhysicalMemory mem, int cpus, ulong reservedBase, ulong reservedSize, string? commandLine = null)
    {
        const ulong P = 1, RW = 2, PS = 0x80;
        mem.Span(0, (int)ImageBase).Clear();
        mem.WriteU64(Pml4 + 0 * 8, PdptLow | P | RW);
        mem.WriteU64(Pml4 + 511 * 8, PdptHigh | P | RW);
        for (ulong g = 0; g < 4; g++) mem.WriteU64(PdptLow + g * 8, (g << 30) | P | RW | PS);
        mem.WriteU64(PdptHigh + 510 * 8, (0UL << 30) | P | RW | PS);
        mem.WriteU64(PdptHigh + 511 * 8, (1UL << 30) | P | RW | PS);
        mem.WriteU64(Gdt + 0, 0);
        mem.WriteU64(Gdt + 8, 0x00AF_9A00_0000_FFFF);  // 64-bit code, DPL 0
        mem.WriteU64(Gdt + 16, 0x00CF_9200_0000_FFFF); // data, DPL 0
        mem.WriteU64(BootInfo + 0, Magic);
        mem.WriteU32(BootInfo + 8, Version);
        mem.WriteU32(BootInfo + 12, (uint)cpus);
        mem.WriteU64(BootInfo + 16, mem.Size);
        mem.WriteU64(BootInfo + 24, reservedBase);
        mem.WriteU64(BootInfo + 32, reservedSize);
        if (commandLine is not null)
        {
            var bytes = System.Text.Encoding.ASCII.GetBytes(commandLine);
            mem.Write(CommandLine, bytes);
            mem.Write(CommandLine + (ulong)bytes.Length, [0]);
            mem.WriteU64(BootInfo + 40, CommandLine);
        }
        return new BootState(
            Cr0: Cr0Bits.PE | Cr0Bits.MP | Cr0Bits.ET | Cr0Bits.NE | Cr0Bits.WP | Cr0Bits.PG,
            Cr3: Pml4,
            Cr4: Cr4Bits.PAE,
            Efer: EferBits.SCE | EferBits.LME | EferBits.LMA | EferBits.NXE,
            GdtBase: Gdt,
            GdtLimit: 23);
    }

    public static ulong MailboxAddress(int apicId) => BootInfo + MailboxOffset + (ulong)apicId * MailboxEntrySize;
}
