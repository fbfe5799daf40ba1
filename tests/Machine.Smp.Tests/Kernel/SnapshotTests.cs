using Harness.Tests.Shared;
using System.Text;
using System.Text.RegularExpressions;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Tests.Integration;
using Xunit;

namespace Harness.Smp.Tests.Kernel;

/// <summary>
/// A snapshot taken mid-run (the guest kernel stopped at a guest instruction count of vCPU 0,
/// captured, restored into a fresh machine and resumed) ends as the uninterrupted run does: the
/// same exit and the same workload results, under the deterministic and the free-running control. A
/// restore that dropped part of the state would hang, fault or print other results: a planted one
/// that loses a vCPU's registers is caught.
/// </summary>
[Collection(SampleGuestCollection.Name)]
public class SnapshotTests(SampleGuestFixture guest)
{
    private const string CommandLine = "run=pipe_rtt,fileserver";

    private Machine Make(MemoryStream console, ExecutionControl control)
    {
        _ = guest.ImagePath;
        var m = new Machine(new MachineOptions
        {
            Vcpus = 2, MemoryBytes = 64UL << 20, Control = control, MaxInstructions = 2_000_000_000, Console = console, CommandLine = CommandLine,
        });
        m.LoadElf(File.ReadAllBytes(Path.Combine(Support.RepoRoot, "guest", "build", "kernel", "kernel.elf")), "kernel.elf");
        return m;
    }

    private static IReadOnlyList<string> Results(string console) =>
        Regex.Matches(console, @"^(result|workload) .*$", RegexOptions.Multiline).Select(m => Regex.Replace(m.Value, @" (time|insns\w*)=\S+", "")).ToList();

    private static MachineSnapshot Take(Machine m, MemoryStream console, long at)
    {
        m.At(at, v => m.Stop(StopReason.Interrupted, 0, "snapshot point"));
        var r = m.Run();
        Assert.True(r.Reason == StopReason.Interrupted, $"{r.Reason}: {r.Message}");
        return m.Capture(console.ToArray());
    }

    [Theory]
    [InlineData(500_000)]
    [InlineData(2_000_000)]
    public void ARestoredSnapshotEndsAsTheUninterruptedRun(long at)
    {
        var whole = new MemoryStream();
        using (var m = Make(whole, new Deterministic(1000)))
        {
            var r = m.Run();
            Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}");
        }
        var first = new MemoryStream();
        MachineSnapshot snap;
        using (var m = Make(first, new Deterministic(1000))) snap = Take(m, first, at);
        Assert.Equal(at, snap.At);

        foreach (var control in new ExecutionControl[] { new Deterministic(1000), new FreeRunning() })
        {
            var rest = new MemoryStream();
            using var m2 = Make(rest, control);
            m2.Restore(snap);
            var r2 = m2.Resume();
            string text = Encoding.ASCII.GetString(rest.ToArray());
            Assert.True(r2.Reason == StopReason.Exited && r2.ExitStatus == 0, $"{control.Name}: {r2.Reason} {r2.ExitStatus}: {r2.Message}\n{text}");
            Assert.Equal(Results(Encoding.ASCII.GetString(whole.ToArray())), Results(text));
            Assert.True(r2.Vcpus[0].GuestTime > at);
        }
    }

    /// <summary>
    /// The check can fail: a restore that loses one vCPU's general registers does not end as the
    /// whole run. (One that loses the APICs went unnoticed at this point of this workload: the
    /// kernel's timer is not what pipe_rtt and the file server wait on.)
    /// </summary>
    [Fact]
    public void ARestoreThatLosesAVcpusRegistersIsCaught()
    {
        var console = new MemoryStream();
        MachineSnapshot snap;
        using (var m = Make(console, new Deterministic(1000))) snap = Take(m, console, 2_000_000);
        var rest = new MemoryStream();
        using var m2 = Make(rest, new Deterministic(1000));
        m2.Restore(snap);
        for (int g = 0; g < 16; g++) if (g != Reg.Rsp) m2.Vcpus[1].Gpr(g) = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var r = m2.Resume(cts.Token);
        Assert.False(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"a restore without vCPU 1's registers still ended clean: {r.Reason}");
    }

    [Fact]
    public void ASnapshotOfAnotherShapeOfMachineIsRefused()
    {
        var console = new MemoryStream();
        MachineSnapshot snap;
        using (var m = Make(console, new Deterministic(1000))) snap = Take(m, console, 1_000_000);
        using var other = new Machine(new MachineOptions { Vcpus = 1, MemoryBytes = 64UL << 20 });
        var e = Assert.Throws<ArgumentException>(() => other.Restore(snap));
        Assert.Contains("2 vCPUs", e.Message);
        Assert.Throws<InvalidOperationException>(() => other.Resume());
    }
}
