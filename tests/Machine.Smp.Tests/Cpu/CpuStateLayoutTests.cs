using System.Runtime.CompilerServices;
using Harness.Smp.Cpu;
using Xunit;

namespace Harness.Smp.Tests.Cpu;

/// <summary>
/// The CPU state is one flat struct whose field offsets are part of the contract (code that reads
/// state by offset, like a translator's generated helpers, depends on them). New fields go at the
/// end; moving one fails here.
/// </summary>
public unsafe class CpuStateLayoutTests
{
    private static int Offset(ref CpuState s, ref byte field) => (int)Unsafe.ByteOffset(ref Unsafe.As<CpuState, byte>(ref s), ref field);

    [Fact]
    public void Field_offsets_are_pinned()
    {
        var s = new CpuState();
        var actual = new (string name, int offset)[]
        {
            ("Gpr", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Gpr[0]))),
            ("Gpr[15]", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Gpr[15]))),
            ("Rip", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Rip))),
            ("RflagsRaw", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.RflagsRaw))),
            ("LazyRes", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.LazyRes))),
            ("Cr0", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Cr0))),
            ("Cr3", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Cr3))),
            ("GsBase", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.GsBase))),
            ("KernelGsBase", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.KernelGsBase))),
            ("Lstar", Offset(ref s, ref Unsafe.As<ulong, byte>(ref s.Lstar))),
            ("Retired", Offset(ref s, ref Unsafe.As<long, byte>(ref s.Retired))),
        };
        var expected = new (string, int)[]
        {
            ("Gpr", 0), ("Gpr[15]", 120), ("Rip", 128), ("RflagsRaw", 136), ("LazyRes", 144),
            ("Cr0", 184), ("Cr3", 200), ("GsBase", 232), ("KernelGsBase", 240), ("Lstar", 256), ("Retired", 352),
        };
        Assert.Equal(expected, actual);
        Assert.Equal(368, sizeof(CpuState));
    }
}
