using System.Text;
using Harness.Smp.Control;
using Harness.Tests.Shared;
using Iced.Intel;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Smp.Tests.Integration;

/// <summary>
/// guest/samples/bits, built with gcc -march=x86-64-v3: the BMI1/BMI2/MOVBE/LZCNT/POPCNT code gcc
/// emits runs on the interpreter with the checksum the host CPU computes from the same source
/// (guest/build/host/libbits.so). Before Exec/Bmi.cs it stopped at its first andn ("unsupported").
/// </summary>
[Collection(SampleGuestCollection.Name)]
public class BitsSampleTests(SampleGuestFixture guest, ITestOutputHelper output)
{
    [Theory]
    [InlineData("free")]
    [InlineData("deterministic")]
    public void RunsWithTheHostsChecksum(string exec)
    {
        _ = guest.ImagePath; // builds the samples (and the host library)
        var console = new MemoryStream();
        using var m = Support.NewMachine(1, exec == "free" ? new FreeRunning() : new Deterministic(1000), console, maxInstructions: 50_000_000);
        m.LoadElf(BitsSample.ImagePath);
        var r = Support.RunWithWatchdog(m);
        Assert.True(r.Exited && r.ExitStatus == 0, $"{r.Reason}: {r.Message}");
        Assert.Equal(BitsSample.Transcript(BitsSample.HostChecksum()), Encoding.ASCII.GetString(console.ToArray()));
    }

    /// <summary>What gcc emitted: every mnemonic the sample is meant to exercise is in its text (else the test above proves less).</summary>
    [Fact]
    public void TheImageHoldsTheExtensionsGccEmits()
    {
        _ = guest.ImagePath;
        using var m = Support.NewMachine(1, new Deterministic(100));
        var img = m.LoadElf(BitsSample.ImagePath);
        var seen = new HashSet<Mnemonic>();
        foreach (var s in img.Segments.Where(s => (s.Flags & 1) != 0)) // PF_X
        {
            var bytes = m.Memory.Span(s.PhysAddr, (int)s.FileSize).ToArray();
            var d = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(bytes), s.VirtAddr);
            while (d.IP < s.VirtAddr + (ulong)bytes.Length) { d.Decode(out var ins); seen.Add(ins.Mnemonic); }
        }
        Mnemonic[] expected =
        [
            Mnemonic.Andn, Mnemonic.Bextr, Mnemonic.Blsi, Mnemonic.Blsmsk, Mnemonic.Blsr, Mnemonic.Bzhi, Mnemonic.Mulx,
            Mnemonic.Pdep, Mnemonic.Pext, Mnemonic.Rorx, Mnemonic.Sarx, Mnemonic.Shlx, Mnemonic.Shrx, Mnemonic.Movbe,
            Mnemonic.Tzcnt, Mnemonic.Lzcnt, Mnemonic.Popcnt,
        ];
        output.WriteLine($"extension mnemonics in bits.elf: {string.Join(' ', expected.Where(seen.Contains))}");
        Assert.All(expected, x => Assert.Contains(x, seen));
    }

    /// <summary>CPUID says what the machine implements: BMI1, BMI2, ADX (leaf 7), MOVBE, POPCNT (leaf 1), LZCNT (0x80000001).</summary>
    [Fact]
    public void CpuidReportsTheIntegerExtensions()
    {
        var code = Support.Asm(a =>
        {
            a.xor(Iced.Intel.AssemblerRegisters.eax, Iced.Intel.AssemblerRegisters.eax);
            a.cpuid();
            a.mov(Iced.Intel.AssemblerRegisters.__dword_ptr[0x200000], Iced.Intel.AssemblerRegisters.eax);
            a.mov(Iced.Intel.AssemblerRegisters.eax, 7);
            a.xor(Iced.Intel.AssemblerRegisters.ecx, Iced.Intel.AssemblerRegisters.ecx);
            a.cpuid();
            a.mov(Iced.Intel.AssemblerRegisters.__dword_ptr[0x200004], Iced.Intel.AssemblerRegisters.ebx);
            a.mov(Iced.Intel.AssemblerRegisters.eax, 1);
            a.cpuid();
            a.mov(Iced.Intel.AssemblerRegisters.__dword_ptr[0x200008], Iced.Intel.AssemblerRegisters.ecx);
            a.mov(Iced.Intel.AssemblerRegisters.__dword_ptr[0x200010], Iced.Intel.AssemblerRegisters.ebx);
            a.mov(Iced.Intel.AssemblerRegisters.eax, 0x8000_0001);
            a.cpuid();
            a.mov(Iced.Intel.AssemblerRegisters.__dword_ptr[0x20000c], Iced.Intel.AssemblerRegisters.ecx);
            a.xor(Iced.Intel.AssemblerRegisters.eax, Iced.Intel.AssemblerRegisters.eax);
            a.@out(0xF4, Iced.Intel.AssemblerRegisters.eax);
            a.hlt();
        });
        uint maxLeaf = 0, leaf7 = 0, leaf1 = 0, ext1 = 0, leaf1Ebx = 0;
        var r = Support.RunCode(code, prepare: m => m.Disposing += () =>
            (maxLeaf, leaf7, leaf1, ext1, leaf1Ebx) = (m.Memory.ReadU32(0x200000), m.Memory.ReadU32(0x200004), m.Memory.ReadU32(0x200008), m.Memory.ReadU32(0x20000c), m.Memory.ReadU32(0x200010)));
        Assert.True(r.Exited, r.Message);
        Assert.True(maxLeaf >= 7, $"max basic leaf {maxLeaf}");
        Assert.Equal((1u << 3) | (1u << 8) | (1u << 19), leaf7 & ((1u << 3) | (1u << 8) | (1u << 19)));
        Assert.NotEqual(0u, leaf1 & (1u << 22)); // MOVBE
        Assert.NotEqual(0u, leaf1 & (1u << 23)); // POPCNT
        Assert.NotEqual(0u, ext1 & (1u << 5));   // LZCNT
        Assert.Equal(0u, leaf1 & ((1u << 0) | (1u << 19) | (1u << 28))); // no SSE3, SSE4.1, AVX
        // Leaf 1 EBX: APIC id 0 (vCPU 0), 1 logical CPU, CLFLUSH line 8 qwords.
        Assert.Equal(0x0001_0800u, leaf1Ebx & 0xFFFF_FF00);
    }
}
