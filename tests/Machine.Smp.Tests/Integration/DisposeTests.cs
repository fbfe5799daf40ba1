using Harness.Smp.Control;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>
/// Every public accessor of a machine's native memory after Dispose: an ObjectDisposedException or
/// the last value, never a read of freed memory (which aborts the process).
/// </summary>
public class DisposeTests
{
    [Fact]
    public void AccessorsAfterDisposeThrowOrKeepTheLastValue()
    {
        var code = Support.Asm(a =>
        {
            a.mov(rbx, 0x1234_5678UL);
            a.mov(__qword_ptr[0x200000], rbx);
            a.mov(eax, 0);
            a.@out(0xF4, eax);
            a.hlt();
        });
        var m = Support.NewMachine(1, new Deterministic(100));
        m.Memory.Write(Support.Code, code);
        var r = Support.RunWithWatchdog(m, entry: Support.Code);
        Assert.True(r.Exited, r.Message);
        var v = m.Vcpus[0];
        Assert.Equal(0x1234_5678UL, v.Read64(0x200000)); // through the TLB while the machine lives
        m.Dispose();

        Assert.Throws<ObjectDisposedException>(() => m.Memory.ReadU64(0x200000));
        Assert.Throws<ObjectDisposedException>(() => m.Memory.ReadU32(0x200000));
        Assert.Throws<ObjectDisposedException>(() => m.Memory.WriteU64(0x200000, 1));
        Assert.Throws<ObjectDisposedException>(() => m.Memory.Span(0x200000, 8).Length);
        Assert.Throws<ObjectDisposedException>(() => m.Memory.Clear(0x200000, 8));
        Assert.True(m.Memory.IsDisposed);
        // The vCPU's guest-memory accessors: the TLB entry that hit above is gone, the walk refuses.
        Assert.Throws<ObjectDisposedException>(() => v.Read64(0x200000));
        Assert.Throws<ObjectDisposedException>(() => v.Write8(0x200000, 1));
        Assert.Throws<ObjectDisposedException>(() => v.ToPhysical(0x200000, Access.Read));
        // Registers keep their last values.
        Assert.Equal(0x1234_5678UL, v.Gpr(3));
        Assert.NotEqual(0UL, v.Rip);
        m.Dispose(); // idempotent: no double free
    }
}
