using System.Text;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;

namespace Harness.Smp.Tests.Integration;

/// <summary>The bundled smp-demo guest boots and prints its checked-in transcript on 1, 2 and 4 vCPUs.</summary>
[Collection(SampleGuestCollection.Name)]
public class SampleGuestTests(SampleGuestFixture guest)
{
    private (RunResult Result, string Console) Boot(int vcpus, ExecutionControl control)
    {
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions { Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = control, MaxInstructions = 200_000_000, Console = console });
        m.LoadElf(guest.Image, "smp-demo.elf");
        var r = Support.RunWithWatchdog(m, limit: TimeSpan.FromSeconds(30));
        return (r, Encoding.ASCII.GetString(console.ToArray()));
    }

    [Fact]
    public void ExpectedTranscriptFollowsTheTemplate()
    {
        // Guards the generator: for 2 vCPUs it reproduces the checked-in file exactly.
        string file = File.ReadAllText(Path.Combine(Support.IntegrationDir, "smp-demo.expected.txt")).ReplaceLineEndings("\n");
        Assert.Equal(file, SampleGuestFixture.Expected(2));
        Assert.Contains("cpu 3: apic-id 3 ticks>=3 ok\ncounter: 4000\n", SampleGuestFixture.Expected(4));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void FreeRunning(int vcpus)
    {
        var (r, output) = Boot(vcpus, new FreeRunning());
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}\n{output}");
        Assert.Equal(SampleGuestFixture.Expected(vcpus), output);
        Assert.Equal(0, r.ExitStatus);
        Assert.All(r.Vcpus, v => Assert.True(v.Started && v.Instructions > 0, $"vCPU {v.Index} never ran"));
    }

    [Theory]
    [InlineData(1, 7)]
    [InlineData(2, 7)]
    [InlineData(4, 7)]
    [InlineData(1, 1000)]
    [InlineData(2, 1000)]
    [InlineData(4, 1000)]
    public void DeterministicAndReproducible(int vcpus, long quantum)
    {
        var (r1, out1) = Boot(vcpus, new Deterministic(quantum));
        Assert.True(r1.Reason == StopReason.Exited, $"{r1.Reason}: {r1.Message}\n{out1}");
        Assert.Equal(SampleGuestFixture.Expected(vcpus), out1);
        Assert.Equal(0, r1.ExitStatus);

        var (r2, out2) = Boot(vcpus, new Deterministic(quantum));
        Assert.Equal(Encoding.ASCII.GetBytes(out1), Encoding.ASCII.GetBytes(out2));
        Assert.Equal(r1.Reason, r2.Reason);
        Assert.Equal(r1.ExitStatus, r2.ExitStatus);
        Assert.Equal(r1.Vcpus.Select(v => v.Instructions), r2.Vcpus.Select(v => v.Instructions));
        Assert.Equal(r1.Vcpus.Select(v => v.Interrupts), r2.Vcpus.Select(v => v.Interrupts));
        Assert.Equal(r1.Vcpus.Select(v => v.Exceptions), r2.Vcpus.Select(v => v.Exceptions));
    }
}
