using Harness.Tests.Shared;
using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>Malformed images are rejected with an ImageException naming the file and the offending field or segment.</summary>
public class BadImageTests
{
    const string Name = "bad-image.elf";

    static readonly byte[] ExitCode = Support.Asm(a => { a.mov(eax, 42); a.@out(0xF4, eax); a.hlt(); });

    static ImageException Load(byte[] file)
    {
        using var m = Support.NewMachine(1, new Deterministic(100));
        var e = Assert.Throws<ImageException>(() => m.LoadElf(file, Name));
        Assert.StartsWith(Name + ": ", e.Message);
        return e;
    }

    static void AssertMentions(ImageException e, params string[] parts)
    {
        foreach (var p in parts) Assert.True(e.Message.Contains(p, StringComparison.OrdinalIgnoreCase), $"message lacks \"{p}\": {e.Message}");
    }

    [Fact]
    public void WellFormedImageLoadsAndRuns()
    {
        using var m = Support.NewMachine(1, new Deterministic(100));
        var img = m.LoadElf(ElfBuilder.For(ExitCode).Build(), Name);
        Assert.Equal(Support.Code, img.Entry);
        var r = Support.RunWithWatchdog(m);
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(42, r.ExitStatus);
    }

    [Fact]
    public void BssIsZeroFilled()
    {
        // p_memsz > p_filesz: the tail is zeroed even when RAM there was dirty.
        var code = Support.Asm(a => { a.mov(rbx, 0x100800UL); a.mov(rax, __qword_ptr[rbx]); a.@out(0xF4, eax); a.hlt(); });
        var elf = new ElfBuilder { Segments = { new ElfBuilder.Segment(Support.Code, Support.Code, code, 0x1000) } }.Build();
        using var m = Support.NewMachine(1, new Deterministic(100));
        m.Memory.Write(0x100800, BitConverter.GetBytes(0xDEADUL));
        m.LoadElf(elf, Name);
        var r = Support.RunWithWatchdog(m);
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(0, r.ExitStatus);
    }

    [Fact]
    public void Truncated() => AssertMentions(Load(new byte[10]), "10 bytes", "header");

    [Fact]
    public void Empty() => AssertMentions(Load([]), "0 bytes");

    [Fact]
    public void BadMagic()
    {
        var f = ElfBuilder.For(ExitCode).Build();
        f[1] = (byte)'X';
        AssertMentions(Load(f), "magic", "offset 0");
    }

    [Fact]
    public void Elf32() => AssertMentions(Load(new ElfBuilder { Class = 1, Segments = ElfBuilder.For(ExitCode).Segments }.Build()), "EI_CLASS", "ELF64");

    [Fact]
    public void BigEndian() => AssertMentions(Load(new ElfBuilder { DataEncoding = 2, Segments = ElfBuilder.For(ExitCode).Segments }.Build()), "EI_DATA");

    [Fact]
    public void WrongMachine() => AssertMentions(Load(new ElfBuilder { MachineId = 183 /* AArch64 */, Segments = ElfBuilder.For(ExitCode).Segments }.Build()), "e_machine", "183");

    [Fact]
    public void NotAnExecutable() => AssertMentions(Load(new ElfBuilder { Type = 3 /* ET_DYN */, Segments = ElfBuilder.For(ExitCode).Segments }.Build()), "e_type", "ET_EXEC");

    [Fact]
    public void ProgramHeadersPastEndOfFile()
    {
        var b = ElfBuilder.For(ExitCode);
        b.PhOffOverride = 0x10000;
        AssertMentions(Load(b.Build()), "program headers", "0x10000", "past the end");
    }

    [Fact]
    public void ProgramHeaderCountPastEndOfFile()
    {
        var b = ElfBuilder.For(ExitCode);
        b.PhNumOverride = 500;
        AssertMentions(Load(b.Build()), "program headers", "500", "past the end");
    }

    [Fact]
    public void SegmentDataPastEndOfFile()
    {
        var b = ElfBuilder.For(ExitCode);
        b.OffsetSkew = 0x100000;
        AssertMentions(Load(b.Build()), "program header 0", "past the end");
    }

    [Fact]
    public void NoProgramHeaders()
    {
        var b = ElfBuilder.For(ExitCode);
        b.PhNumOverride = 0;
        AssertMentions(Load(b.Build()), "e_phnum");
    }

    [Fact]
    public void SegmentOutsideRam()
    {
        const ulong at = 64UL << 20; // the machine has 32 MiB
        AssertMentions(Load(ElfBuilder.For(ExitCode, at).Build()), "segment 0", "0x4000000", "outside RAM");
    }

    [Fact]
    public void SecondSegmentOutsideRamIsNamed()
    {
        var b = ElfBuilder.For(ExitCode);
        b.Segments.Add(new ElfBuilder.Segment(0x1_0000_0000, 0x1_0000_0000, [1, 2, 3], 3));
        AssertMentions(Load(b.Build()), "segment 1", "0x100000000", "outside RAM");
    }

    [Fact]
    public void SegmentRunningOffTheEndOfRam()
    {
        var b = new ElfBuilder { Segments = { new ElfBuilder.Segment(Support.Code, Support.Code, ExitCode, Support.Ram) } };
        AssertMentions(Load(b.Build()), "segment 0", "outside RAM");
    }

    [Fact]
    public void SegmentBelowOneMiB() => AssertMentions(Load(ElfBuilder.For(ExitCode, 0x8000).Build()), "segment 0", "0x8000", "below 1 MiB");

    [Fact]
    public void SegmentInReservedRegion()
    {
        ulong reserved = Support.Ram - (1UL << 20);
        AssertMentions(Load(ElfBuilder.For(ExitCode, reserved + 0x1000).Build()), "segment 0", "reserved");
    }

    [Fact]
    public void EntryOutsideSegments()
    {
        var b = ElfBuilder.For(ExitCode);
        b.Entry = 0x180000;
        AssertMentions(Load(b.Build()), "entry point", "0x180000", "outside");
    }

    [Fact]
    public void NoLoadableSegment()
    {
        var b = new ElfBuilder { Segments = { new ElfBuilder.Segment(Support.Code, Support.Code, ExitCode, (ulong)ExitCode.Length, Type: 4 /* PT_NOTE */) } };
        AssertMentions(Load(b.Build()), "PT_LOAD");
    }

    [Fact]
    public void FileSizeLargerThanMemSize()
    {
        var b = new ElfBuilder { Segments = { new ElfBuilder.Segment(Support.Code, Support.Code, ExitCode, 1) } };
        AssertMentions(Load(b.Build()), "program header 0", "p_filesz", "p_memsz");
    }

    [Fact]
    public void OverlappingSegmentsAreRefusedNamingBothRanges()
    {
        // Program header 1 lands inside header 0's zero-filled tail: loaded in order it would win silently.
        var b = new ElfBuilder
        {
            Segments =
            {
                new ElfBuilder.Segment(Support.Code, Support.Code, ExitCode, 0x2000),
                new ElfBuilder.Segment(Support.Code + 0x1000, Support.Code + 0x1000, [1, 2, 3], 3),
            },
        };
        AssertMentions(Load(b.Build()), "program headers 0 and 1 overlap", "[0x100000, 0x102000)", "[0x101000, 0x101003)");
    }

    [Fact]
    public void AdjacentSegmentsLoad()
    {
        var b = new ElfBuilder
        {
            Segments =
            {
                new ElfBuilder.Segment(Support.Code, Support.Code, ExitCode, 0x1000),
                new ElfBuilder.Segment(Support.Code + 0x1000, Support.Code + 0x1000, [1, 2, 3], 3),
            },
        };
        using var m = Support.NewMachine(1, new Deterministic(100));
        Assert.Equal(2, m.LoadElf(b.Build(), Name).Segments.Count);
    }

    [Fact]
    public void MissingFileNamesThePath()
    {
        using var m = Support.NewMachine(1, new Deterministic(100));
        string path = Path.Combine(Path.GetTempPath(), $"no-such-image-{Guid.NewGuid():N}.elf");
        var e = Assert.Throws<ImageException>(() => m.LoadElf(path));
        Assert.Contains(path, e.Message);
    }
}
