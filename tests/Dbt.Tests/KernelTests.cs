using Harness.Smp.Cpu;
using Harness.Smp.Control;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Dbt.Tests;

/// <summary>
/// The guest kernel's whole default workload set under every translator configuration, on 1, 2
/// and 4 vCPUs, free-running and deterministic: every workload exits 0 with the same results as the
/// native run (file-server checksum included), and no kernel instruction ever executes outside the
/// code cache.
/// </summary>
public class KernelTests(ITestOutputHelper output)
{
    private static readonly Lazy<KernelSupport.KernelRun> native = new(() => KernelSupport.Boot(null, 2, new Deterministic(1000)));

    public static TheoryData<string, int, string> Matrix()
    {
        var d = new TheoryData<string, int, string>();
        foreach (var config in DbtOptions.Configurations)
            foreach (int vcpus in new[] { 1, 2, 4 })
                foreach (var exec in new[] { "free", "det" })
                    d.Add(config, vcpus, exec);
        return d;
    }

    internal static DbtOptions Config(string name) => DbtOptions.Named(name);

    [Theory]
    [MemberData(nameof(Matrix))]
    public void DefaultWorkloadsGiveNativeResults(string config, int vcpus, string exec)
    {
        var reference = native.Value;
        AssertAllPassed(reference, "native");
        var run = KernelSupport.Boot(Config(config), vcpus, Support.Control(exec));
        AssertAllPassed(run, $"{config} {vcpus} vCPUs {exec}");
        Assert.Equal(reference.Results, run.Results);
        Assert.Equal(reference.WorkloadExits, run.WorkloadExits);
        Assert.True(run.NativeDecodes == 0, $"kernel code ran outside the code cache: {run.NativeDecodes} blocks, the first at 0x{run.FirstNativeRip:x}");
        var s = run.Dbt!.Stats;
        Assert.Null(s.Failure);
        Assert.Equal(1, s.ShadowIdts);
        output.WriteLine($"{config} {vcpus} {exec}: {s}");
    }

    /// <summary>The request/response server (the experiment's Apache analogue): 6 clients and their servers over pipes.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void TheRequestResponseServerGivesNativeResultsUnderEveryConfiguration(int vcpus)
    {
        const string cmd = "selftest=0 run=httpd:0x1006";
        var reference = KernelSupport.Boot(null, vcpus, new Deterministic(1000), cmd);
        Assert.True(reference.Result.ExitStatus == 0, reference.Console);
        Assert.Contains("result httpd clients=6 ops=96 bytes=", reference.Console);
        foreach (var config in DbtOptions.Configurations)
        {
            var run = KernelSupport.Boot(Config(config), vcpus, new Deterministic(1000), cmd);
            Assert.True(run.Result.ExitStatus == 0, $"{config}: {run.Result.Message}\n{run.Console}");
            Assert.Equal(reference.Results, run.Results);
            Assert.Equal(["httpd=0"], run.WorkloadExits);
        }
    }

    internal static void AssertAllPassed(KernelSupport.KernelRun r, string what)
    {
        Assert.True(r.Result.Reason == StopReason.Exited && r.Result.ExitStatus == 0, $"{what}: {r.Result.Reason} {r.Result.ExitStatus}: {r.Result.Message}\n{r.Console}");
        Assert.DoesNotContain("panic", r.Console);
        Assert.Equal(KernelSupport.DefaultWorkloads.Order().Select(w => $"{w}=0"), r.WorkloadExits.Order());
        Assert.Contains($"checksum={KernelSupport.FileServerChecksum}", r.Console);
        Assert.Contains("result selftest checks=25 failed=0", r.Console);
    }

    [Fact]
    public void CallRetIdentityKeepsReturnsOutOfTheDispatcherAndNoCallRetDoesNot()
    {
        var d = KernelSupport.Boot(DbtOptions.Default, 1, new Deterministic(1000), "run=null_syscall");
        var n = KernelSupport.Boot(DbtOptions.NoCallRet, 1, new Deterministic(1000), "run=null_syscall");
        var o = KernelSupport.Boot(null, 1, new Deterministic(1000), "run=null_syscall");
        long nat = o.InsnsPerOp("null_syscall"), def = d.InsnsPerOp("null_syscall"), ncr = n.InsnsPerOp("null_syscall");
        output.WriteLine($"null syscall insns/op: native {nat}, default {def}, no-callret {ncr}; jumptable misses default {d.Dbt!.Stats.IndirectDispatches}, no-callret {n.Dbt!.Stats.IndirectDispatches}");
        Assert.True(def >= nat && ncr > def, $"native {nat}, default {def}, no-callret {ncr}");
        Assert.True(n.Dbt.Stats.IndirectDispatches > 3 * d.Dbt.Stats.IndirectDispatches);
    }
}
