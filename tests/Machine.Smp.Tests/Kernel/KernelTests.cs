using System.Text;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Tests.Integration;
using Xunit;

namespace Harness.Smp.Tests.Kernel;

/// <summary>
/// The guest kernel (guest/kernel, built by guest/build.sh into guest/build/kernel/) boots on 1, 2
/// and 4 vCPUs, free-running and deterministic, runs its self-test and the bundled user programs
/// and exits 0; the deliberately broken spinlock build is caught by the kernel's own checks.
/// Shares the sample-guest collection so guest/build.sh runs once and never concurrently.
/// </summary>
[Collection(SampleGuestCollection.Name)]
public class KernelTests(SampleGuestFixture guest)
{
    private static string KernelPath(string name) => Path.Combine(Support.RepoRoot, "guest", "build", "kernel", name);

    /// <summary>The kernel's default run (no run= on its command line): the default workload set.</summary>
    public static readonly string[] DefaultWorkloads =
        ["selftest", "null_syscall", "read1", "write1", "open_close", "stat", "page_fault", "pipe_rtt", "spawn_exit", "fileserver"];
    private static readonly string[] Lmbench = DefaultWorkloads[1..^1];
    private const string FileServerChecksum = "0xf3d82c8728490a13"; // 4 workers x 150 ops; equals a native Linux run (guest/user/README.md)

    private (RunResult Result, string Console) Boot(int vcpus, ExecutionControl control, string? cmdline = "run=ktest,selftest",
        string image = "kernel.elf")
    {
        _ = guest.ImagePath;   // builds guest/ (samples, user programs, kernel) once
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = control, MaxInstructions = 2_000_000_000,
            Console = console, CommandLine = cmdline,
        });
        m.LoadElf(File.ReadAllBytes(KernelPath(image)), image);
        var r = Support.RunWithWatchdog(m, limit: TimeSpan.FromSeconds(30));
        return (r, Encoding.ASCII.GetString(console.ToArray()));
    }

    private static void AssertBooted(RunResult r, string output, int vcpus)
    {
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}\n{output}");
        Assert.True(r.ExitStatus == 0, $"exit {r.ExitStatus}\n{output}");
        Assert.DoesNotContain("panic", output);
        Assert.DoesNotContain("FAILED", output);
        string[] expected =
        [
            $"smp: {vcpus} cpus online\n",
            "selftest: exception tables ok\n",
            "selftest: allocator ok\n",
            $"selftest: scheduler threads={2 * vcpus + 2} iterations=1500 counter={(2 * vcpus + 2) * 1500} ok\n",
            "selftest: kernel ok\n",
            "ktest: hello from user mode\n",
            "ktest: ok\n",
            "workload ktest exit=0 time=",
            "workload selftest exit=0 time=",
            "init: 2 workloads, 0 failed\n",
        ];
        int at = 0;
        foreach (var line in expected)
        {
            int i = output.IndexOf(line, at, StringComparison.Ordinal);
            Assert.True(i >= 0, $"missing (in order) \"{line.TrimEnd()}\" in:\n{output}");
            at = i + line.Length;
        }
        Assert.StartsWith($"kernel: boot cpus={vcpus} ", output);
        Assert.All(r.Vcpus, v => Assert.True(v.Started && v.Instructions > 0, $"vCPU {v.Index} never ran"));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void BootsFreeRunning(int vcpus)
    {
        var (r, output) = Boot(vcpus, new FreeRunning());
        AssertBooted(r, output, vcpus);
    }

    [Theory]
    [InlineData(1, 100)]
    [InlineData(2, 100)]
    [InlineData(4, 100)]
    [InlineData(1, 1000)]
    [InlineData(2, 1000)]
    [InlineData(4, 1000)]
    public void BootsDeterministic(int vcpus, long quantum)
    {
        var (r, output) = Boot(vcpus, new Deterministic(quantum));
        AssertBooted(r, output, vcpus);
    }

    [Fact]
    public void DeterministicRunsAreReproducible()
    {
        var (r1, o1) = Boot(2, new Deterministic(100));
        var (r2, o2) = Boot(2, new Deterministic(100));
        AssertBooted(r1, o1, 2);
        Assert.Equal(o1, o2);
        Assert.Equal(r1.Vcpus.Select(v => v.Instructions), r2.Vcpus.Select(v => v.Instructions));
    }

    [Fact]
    public void CommandLineSelectsWorkloads()
    {
        var (r, output) = Boot(2, new Deterministic(1000), "selftest=0 run=ktest,no_such_program");
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}\n{output}");
        Assert.Equal(1, r.ExitStatus);
        Assert.DoesNotContain("selftest: kernel ok", output);
        Assert.Matches("workload ktest exit=0 time=[1-9][0-9]*\nworkload no_such_program exit=spawn-error\\(-2\\)\n", output);
        Assert.Contains("\ninit: 2 workloads, 1 failed\n", output);
    }

    [Fact]
    public void FileServerChecksumMatchesTheHost()
    {
        var (r, output) = Boot(2, new Deterministic(100), "selftest=0 run=fileserver");
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}\n{output}");
        Assert.Contains("result fileserver workers=4 ops=600 checksum=0xf3d82c8728490a13\n", output);
    }

    /// <summary>
    /// Every workload of the default set passes on 1, 2 and 4 vCPUs, free-running and deterministic;
    /// each lmbench-style program reports its line; the file-server checksum is the same everywhere.
    /// </summary>
    [Theory]
    [InlineData(1, "free")]
    [InlineData(2, "free")]
    [InlineData(4, "free")]
    [InlineData(1, "det")]
    [InlineData(2, "det")]
    [InlineData(4, "det")]
    public void DefaultWorkloadSetPasses(int vcpus, string control)
    {
        var (r, output) = Boot(vcpus, control == "free" ? new FreeRunning() : new Deterministic(200), cmdline: null);
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 0, $"{r.Reason} {r.ExitStatus}: {r.Message}\n{output}");
        foreach (var w in DefaultWorkloads)
            Assert.Matches($"(?m)^workload {w} exit=0 time=[1-9][0-9]*$", output);
        Assert.Contains($"init: {DefaultWorkloads.Length} workloads, 0 failed\n", output);
        foreach (var w in Lmbench)
            Assert.Matches($"(?m)^result {w} iterations=[1-9][0-9]* insns_per_op=[1-9][0-9]*", output);
        Assert.Contains($"result fileserver workers=4 ops=600 checksum={FileServerChecksum}\n", output);
        Assert.Contains("result selftest checks=25 failed=0\n", output);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void BrokenSpinlockIsCaughtByTheKernel(long quantum)
    {
        var (r, output) = Boot(2, new Deterministic(quantum), image: "kernel-broken-spinlock.elf");
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}\n{output}");
        Assert.NotEqual(0, r.ExitStatus);
        Assert.Contains("kernel panic (cpu ", output);
        Assert.True(output.Contains("spin") || output.Contains("lock"), output);
        Assert.DoesNotContain("selftest: kernel ok", output);
    }
}
