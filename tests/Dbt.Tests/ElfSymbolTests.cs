using System.Buffers.Binary;
using Harness.Dbt.Kernel;
using Harness.Dbt.Reports;
using Xunit;

namespace Harness.Dbt.Tests;

/// <summary>The one ELF section and symbol reader (Kernel/ElfSections.cs) behind KernelImage and KernelSymbols: the bundled kernel, and bad images.</summary>
public class ElfSymbolTests
{
    static byte[] Kernel() => File.ReadAllBytes(KernelSupport.KernelPath);

    [Fact]
    public void BothViewsOfTheKernelAgree()
    {
        var elf = Kernel();
        var image = KernelImage.FromElf(elf, "kernel.elf");
        var symbols = KernelSymbols.FromElf(elf, "kernel.elf");
        foreach (var name in new[] { "kmain", "__ex_table_start", "__ex_table_end", "extables", "thread_list" })
        {
            Assert.NotNull(image.Symbol(name));
            Assert.Equal(symbols.Address(name), image.Symbol(name));
        }
        Assert.True(symbols.InText(image.Symbol("kmain")!.Value));
        Assert.Contains(symbols.Functions, f => f.Name == "kmain");
    }

    [Fact]
    public void AnImageWithoutSectionHeadersHasNoSymbolsButNoReportText()
    {
        var elf = Kernel();
        BinaryPrimitives.WriteUInt64LittleEndian(elf.AsSpan(0x28), 0); // e_shoff
        Assert.Empty(KernelImage.FromElf(elf, "stripped.elf").Symbols);
        var e = Assert.Throws<FormatException>(() => KernelSymbols.FromElf(elf, "stripped.elf"));
        Assert.Equal("stripped.elf: no section headers", e.Message);
    }

    public static TheoryData<string, Action<byte[]>, string> Malformed => new()
    {
        { "not ELF", b => b[1] = (byte)'X', "bad.elf: not an ELF64 file" },
        { "headers past the end", b => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(0x28), (ulong)b.Length - 64), "bad.elf: section headers at 0x" },
        { "symbol table past the end", b => SymtabField(b, 0x20, 1UL << 40), "bad.elf: symbol table section " },
        { "string table past the end", b => SymtabStrings(b, 0x18, 1UL << 40), "bad.elf: string table section " },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void AMalformedImageIsAFormatErrorNamingTheFileAndThePart(string what, Action<byte[]> damage, string message)
    {
        var elf = Kernel();
        damage(elf);
        foreach (var read in new Action[] { () => KernelImage.FromElf(elf, "bad.elf"), () => KernelSymbols.FromElf(elf, "bad.elf") })
        {
            var e = Assert.Throws<FormatException>(read);
            Assert.True(e.Message.StartsWith(message, StringComparison.Ordinal), $"{what}: {e.Message}");
        }
    }

    static Span<byte> Header(byte[] b, int i)
    {
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(0x28));
        int size = BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(0x3A));
        return b.AsSpan((int)shoff + i * size, 64);
    }

    static int Symtab(byte[] b)
    {
        int n = BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(0x3C));
        for (int i = 0; i < n; i++) if (BinaryPrimitives.ReadUInt32LittleEndian(Header(b, i)[4..]) == 2) return i;
        throw new InvalidOperationException("the kernel has no symbol table");
    }

    static void SymtabField(byte[] b, int field, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(Header(b, Symtab(b))[field..], value);

    static void SymtabStrings(byte[] b, int field, ulong value)
    {
        int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(Header(b, Symtab(b))[0x28..]);
        BinaryPrimitives.WriteUInt64LittleEndian(Header(b, link)[field..], value);
    }
}
