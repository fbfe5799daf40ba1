// Compiled code against the interpreter on real programs: the compute guest's checksum against
// the same C compiled for the host, and the guest kernel under the deterministic control, whose
// every observable (console, instructions and guest time per vCPU, interrupts, exceptions) must
// be the same whether blocks run interpreted or compiled. Regions, edges, loops, faults, interrupts
// and handler calls from compiled code all happen there; a planted compiler bug shows the check fails.

using System.Text;
using Harness.Samples;
using Harness.Smp.Compile;
using Harness.Smp.Cpu;
using Harness.Smp.Control;
using Harness.Smp.Tests.Integration;
using Xunit;

namespace Harness.Smp.Tests.Compile;

[Collection(SampleGuestCollection.Name)]
public unsafe class CompiledEquivalenceTests(SampleGuestFixture guest)
{
    private static string Built(params string[] parts) => Path.Combine([Support.RepoRoot, "guest", "build", .. parts]);

    // ---- the compute guest: the host's own result ------------------------------------------------

    private const ulong Seed = ComputeParams.DefaultSeed, Iterations = 40;

    private static ulong NativeWork(ulong iterations, ulong seed) => ComputeParams.LoadNative(ComputeParams.NativeLibraryPath(Support.RepoRoot))(iterations, seed);

    private (RunResult Result, ulong[] Checksums) RunCompute(int vcpus, BlockCompilation compile, CompilerPlant plant = CompilerPlant.None)
    {
        _ = guest.ImagePath; // builds guest/ once
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = new FreeRunning(), Compile = compile, CompileThreshold = 8,
            CompilerPlant = plant, MaxInstructions = 50_000_000, // work(40) is 3.7 M; a planted bug may loop
        });
        m.LoadElf(ComputeParams.ImagePath(Support.RepoRoot));
        ComputeParams.Patch(m, Iterations, Seed);
        var r = Support.RunWithWatchdog(m, limit: TimeSpan.FromSeconds(60));
        return (r, Enumerable.Range(0, vcpus).Select(i => ComputeParams.Checksum(m, i)).ToArray());
    }

    [Theory]
    [InlineData(1, BlockCompilation.Hot)]
    [InlineData(1, BlockCompilation.Always)]
    [InlineData(2, BlockCompilation.Hot)]
    public void ComputeGuestGetsTheHostsChecksums(int vcpus, BlockCompilation compile)
    {
        long regions = BlockCompiler.RegionsCompiled;
        var (r, sums) = RunCompute(vcpus, compile);
        Assert.True(r.Exited && r.ExitStatus == 0, $"{r.Reason}: {r.Message}");
        for (int i = 0; i < vcpus; i++) Assert.Equal(NativeWork(Iterations, Seed + (ulong)i), sums[i]);
        Assert.True(BlockCompiler.RegionsCompiled > regions, "nothing was compiled");
        if (vcpus == 1)
        {
            var (interpreted, _) = RunCompute(1, BlockCompilation.Off);
            Assert.Equal(interpreted.TotalInstructions, r.TotalInstructions); // exact: the same instructions retired
        }
    }

    [Fact]
    public void PlantedConditionBugChangesTheComputeChecksum()
    {
        // jb/setb/cmovb after cmp reading "above": the sorts and loop bounds of work() go wrong.
        var (r, sums) = RunCompute(1, BlockCompilation.Always, CompilerPlant.BelowIsAbove);
        Assert.False(r.Exited && r.ExitStatus == 0 && sums[0] == NativeWork(Iterations, Seed),
            $"the planted bug went unnoticed: {r.Reason}, checksum 0x{sums[0]:x}");
    }

    // ---- the kernel: every observable equal to the interpreter's -----------------------------------

    private sealed record Observed(string Console, StopReason Reason, int Exit, string Vcpus, long GuestTime);

    private Observed RunKernel(BlockCompilation compile, CompilerPlant plant = CompilerPlant.None, long maxInstructions = 2_000_000_000)
    {
        _ = guest.ImagePath;
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions
        {
            Vcpus = 2, MemoryBytes = 64UL << 20, Control = new Deterministic(1000), MaxInstructions = maxInstructions,
            Console = console, CommandLine = "run=ktest,selftest,pipe_rtt,page_fault,spawn_exit",
            // Compiled on the vCPU's thread at the 16th run: which code runs compiled is itself reproducible.
            Compile = compile, CompileThreshold = 16, CompileOnVcpuThread = true, CompilerPlant = plant,
        });
        m.LoadElf(File.ReadAllBytes(Built("kernel", "kernel.elf")), "kernel.elf");
        var r = Support.RunWithWatchdog(m, limit: TimeSpan.FromSeconds(60));
        string vcpus = string.Join("; ", r.Vcpus.Select(v => $"vCPU {v.Index}: {v.Instructions} executed, guest time {v.GuestTime}, {v.Interrupts} interrupts, {v.Exceptions} exceptions"));
        return new Observed(Encoding.ASCII.GetString(console.ToArray()), r.Reason, r.ExitStatus, vcpus, r.Vcpus.Max(v => v.GuestTime));
    }

    private static void AssertSame(Observed interpreted, Observed compiled)
    {
        Assert.Equal(interpreted.Vcpus, compiled.Vcpus);
        Assert.Equal(interpreted.Console, compiled.Console);
        Assert.Equal((interpreted.Reason, interpreted.Exit), (compiled.Reason, compiled.Exit));
    }

    [Fact]
    public void KernelRunsTheSameCompiledAsInterpreted()
    {
        var interpreted = RunKernel(BlockCompilation.Off);
        Assert.True(interpreted.Reason == StopReason.Exited && interpreted.Exit == 0, interpreted.Console);
        Assert.Contains("selftest: kernel ok", interpreted.Console);
        long regions = BlockCompiler.RegionsCompiled;
        AssertSame(interpreted, RunKernel(BlockCompilation.Hot));
        Assert.True(BlockCompiler.RegionsCompiled > regions, "nothing was compiled");
        AssertSame(interpreted, RunKernel(BlockCompilation.Always));
    }

    [Fact]
    public void PlantedEdgeThatOvershootsTheBudgetIsCaught()
    {
        var interpreted = RunKernel(BlockCompilation.Off);
        // Should the planted run go wrong in a way that never ends, it stops at twice the guest time the correct one needed.
        var planted = RunKernel(BlockCompilation.Hot, CompilerPlant.EdgeOvershootsBudget, maxInstructions: 2 * interpreted.GuestTime);
        // Slices end late, so the vCPUs interleave differently: the per-vCPU counts show it.
        Assert.NotEqual(interpreted.Vcpus, planted.Vcpus);
        Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => AssertSame(interpreted, planted));
    }
}
