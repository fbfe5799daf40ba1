using Harness.Smp.Control;
using Harness.Smp.Memory;
using Xunit;

namespace Harness.Smp.Tests.SystemTests;

/// <summary>
/// This assembly runs with the scheduling points off (free-running builds): the TSO memory model,
/// which drains its buffers at those points, is refused with a message naming the switch, and a
/// machine without it keeps no store buffer at all.
/// </summary>
public class TsoSeamTests
{
    [Fact]
    public void TsoWithoutTheSchedulingPointsIsRefusedNamingTheSwitch()
    {
        Assert.False(Seams.Points);
        var e = Assert.Throws<InvalidOperationException>(() =>
            new Machine(new MachineOptions { Control = new Deterministic(), MemoryModel = MemoryModel.Tso }));
        Assert.Contains(Seams.PointsSwitch, e.Message);
    }

    [Fact]
    public void AnScMachineHasNoStoreBuffers()
    {
        using var m = new Machine(new MachineOptions { Vcpus = 2, Control = new Deterministic() });
        Assert.All(m.Vcpus, v => Assert.Null(v.Tso));
    }
}
