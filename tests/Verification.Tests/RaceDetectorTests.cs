using System.Text;
using Harness.Dbt.Kernel;
using Harness.Smp;
using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Verification.Generic;
using Harness.Verification.Races;
using Harness.Verification.Scenarios;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Tests;

/// <summary>
/// The happens-before race detector: the broken-spinlock kernel is reported in a run where its own
/// ASSERT does not fire (a deterministic run with a long quantum), the
/// correct kernel reports nothing outside its annotated set (and without the annotations the
/// detector does report those), Coyote finds and replays the broken build's race, and a small guest
/// shows which orderings count: a locked hand-off and an IPI order, plain stores do not.
/// </summary>
public class RaceDetectorTests(ITestOutputHelper output)
{
    private static string KernelPath(string image)
    {
        string path = Path.Combine(Support.RepoRoot, "guest", "build", "kernel", image);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} is missing: build the guests first (bash guest/build.sh)", path);
        return path;
    }

    /// <summary>The kernel's self-test once under the deterministic control (quantum 100,000: a critical section is almost never interleaved, so the broken lock goes unnoticed by the kernel), with a detector.</summary>
    private (RunResult Run, string Console, RaceDetector Detector, Func<ulong, string> Symbolize) Deterministic(string image, bool annotations = true)
    {
        string path = KernelPath(image);
        byte[] elf = File.ReadAllBytes(path);
        var symbols = KernelImage.FromElf(elf, path);
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions
        {
            Vcpus = 2, MemoryBytes = 64UL << 20, ReservedBytes = 16UL << 20, MaxInstructions = 200_000_000,
            Control = new Deterministic(100_000), Console = console, CommandLine = "selftest=1 run=",
        });
        m.LoadElf(elf, image);
        var detector = new RaceDetector(m, annotations ? IntendedRaces.For(symbols, elf) : null);
        var r = m.Run();
        var symbolize = Symbolizer.For(symbols);
        output.WriteLine($"{image}: {r.Reason} {r.ExitStatus}; {detector.Races.Count} races, {detector.IntendedSeen} intended left out, {detector.Checked:N0} plain accesses checked, {detector.Synchronizing:N0} synchronizing");
        foreach (var race in detector.Races.Take(3)) output.WriteLine(race.Report(symbolize));
        return (r, Encoding.ASCII.GetString(console.ToArray()), detector, symbolize);
    }

    [Fact]
    public void TheBrokenSpinlockIsReportedInARunWhereItsAssertDoesNotFire()
    {
        var (run, console, d, symbolize) = Deterministic("kernel-broken-spinlock.elf");
        Assert.True(run.Exited && run.ExitStatus == 0, $"{run.Reason}: {run.Message}");
        Assert.DoesNotContain("panic", console);
        Assert.Contains("selftest: kernel ok", console);
        Assert.NotEmpty(d.Races);
        // The self-test's counter, which the broken lock no longer protects, is among them.
        Assert.Contains(d.Races, r => r.Report(symbolize).Contains("st_worker"));
        Assert.StartsWith("==================================================================\nBUG: KCSAN: data-race in ", d.Races[0].Report(symbolize).Replace("\r", ""));
    }

    [Fact]
    public void TheCorrectKernelReportsNothingOutsideItsAnnotatedSet()
    {
        var (run, _, d, symbolize) = Deterministic("kernel.elf");
        Assert.True(run.Exited && run.ExitStatus == 0, run.Message);
        Assert.True(d.Races.Count == 0, string.Join('\n', d.Races.Select(r => r.Report(symbolize))));
        Assert.True(d.IntendedSeen > 0, "no annotated race was seen: the filter was not exercised");

        // Without the kernel's annotations the same run reports them: the filter is what hides them.
        var (_, _, bare, _) = Deterministic("kernel.elf", annotations: false);
        Assert.Equal(d.IntendedSeen, bare.Races.Count);
    }

    [Fact]
    public void CoyoteFindsTheBrokenSpinlocksRaceAndReplaysItAndTheCorrectKernelIsClean()
    {
        var options = new ExploreOptions { Iterations = 2, Seed = 1, MaxSchedulingSteps = 2_000_000, TraceDirectory = Support.TraceDir };
        var broken = MachineScenarios.KernelSelftest(KernelPath("kernel-broken-spinlock.elf"), races: true);
        var r = Explorer.Explore(broken, options);
        output.WriteLine(r.ToString());
        Assert.True(r.BugFound);
        Assert.StartsWith("data race: ", r.Failure);
        var replay = Explorer.Replay(broken, r.TracePath!);
        Assert.True(replay.Reproduced, replay.Log);
        Assert.Equal(r.Failure, replay.Failure);

        var clean = Explorer.Explore(MachineScenarios.KernelSelftest(KernelPath("kernel.elf"), races: true), options);
        output.WriteLine(clean.ToString());
        Assert.False(clean.BugFound, clean.Failure);
    }

    /// <summary>
    /// Two vCPUs of a ring-0 guest hand a value over: vCPU 1 writes data, then publishes a flag the
    /// BSP waits for. With a plain flag store and a plain-load wait the data accesses race (nothing
    /// orders them); with xchg on the flag they do not; with an IPI as the signal they do not.
    /// </summary>
    [Theory]
    [InlineData("plain", true)]
    [InlineData("xchg", false)]
    [InlineData("ipi", false)]
    public void OnlySynchronizationOrdersAHandOff(string signal, bool races)
    {
        const ulong Data = RingZeroGuest.Data + 0x2000, Flag = Data + 0x100, Seen = Data + 0x200;
        var g = new RingZeroGuest();
        var a = g.A;
        var ap = a.CreateLabel("ap");
        var wait = a.CreateLabel("wait");
        // The BSP: start the AP, wait for the signal, read the data, exit.
        g.Prologue();
        g.StartAp(1, ap, fence: true);
        if (signal == "ipi")
        {
            a.sti();
            a.Label(ref wait);
            a.hlt();
            a.jmp(wait);
        }
        else
        {
            a.Label(ref wait);
            a.pause();
            a.mov(rax, __qword_ptr[Flag]);
            a.test(rax, rax);
            a.jz(wait);
        }
        var read = a.CreateLabel("read");
        a.Label(ref read);
        a.mov(rbx, __qword_ptr[Data]);
        a.mov(__qword_ptr[Seen], rbx);
        g.Exit(0);
        // The interrupt handler (ipi): read the data there.
        g.Handler(0x40);
        g.Wrmsr(RingZeroGuest.MsrEoi, 0);
        a.mov(rbx, __qword_ptr[Data]);
        a.mov(__qword_ptr[Seen], rbx);
        g.Exit(0);
        // The AP: write the data, then signal.
        a.Label(ref ap);
        a.mov(__qword_ptr[Data], 42);
        switch (signal)
        {
            case "plain": a.mov(__qword_ptr[Flag], 1); break;
            case "xchg": a.mov(eax, 1); a.xchg(__qword_ptr[Flag], rax); break;
            case "ipi": g.Wrmsr(RingZeroGuest.MsrIcr, 0x40); break; // to vCPU 0
        }
        var park = a.CreateLabel();
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);

        using var m = new Machine(new MachineOptions { Vcpus = 2, MemoryBytes = 16UL << 20, ReservedBytes = 2UL << 20, MaxInstructions = 1_000_000, Control = new Deterministic(3) });
        g.Load(m);
        var d = new RaceDetector(m);
        var r = m.Run(entry: RingZeroGuest.Code);
        Assert.True(r.Exited, r.Message);
        Assert.Equal(42UL, m.Memory.ReadU64(Seen));
        foreach (var race in d.Races) output.WriteLine(race.Report());
        Assert.Equal(races, d.Races.Any(x => x.Earlier.Va == Data || x.Later.Va == Data));
    }
}
