using Harness.Tests.Shared;
using System.Text;
using System.Text.RegularExpressions;
using Harness.Smp;
using Harness.Smp.Control;

namespace Harness.Dbt.Tests;

/// <summary>Boots the guest kernel (guest/build/kernel/kernel.elf) natively or under a DBT configuration.</summary>
internal static class KernelSupport
{
    public static string KernelPath => Path.Combine(Support.RepoRoot, "guest", "build", "kernel", "kernel.elf");

    public static readonly string[] DefaultWorkloads =
        ["selftest", "null_syscall", "read1", "write1", "open_close", "stat", "page_fault", "pipe_rtt", "spawn_exit", "fileserver"];
    public const string FileServerChecksum = "0xf3d82c8728490a13";

    public sealed record KernelRun(RunResult Result, string Console, KernelDbt? Dbt, long NativeDecodes, ulong FirstNativeRip)
    {
        /// <summary>"result ..." lines with the measurements that depend on the instruction count removed.</summary>
        public IReadOnlyList<string> Results => Regex.Matches(Console, @"^result .*$", RegexOptions.Multiline)
            .Select(m => Regex.Replace(m.Value, @" (insns|insns_per_op|insns_per_fault|insns_per_roundtrip)=\d+", "")).ToList();
        public IReadOnlyList<string> WorkloadExits => Regex.Matches(Console, @"^workload (\S+) exit=(\d+)", RegexOptions.Multiline)
            .Select(m => $"{m.Groups[1].Value}={m.Groups[2].Value}").ToList();
        public long InsnsPerOp(string workload) =>
            long.Parse(Regex.Match(Console, $@"^result {workload} .*insns_per_op=(\d+)", RegexOptions.Multiline).Groups[1].Value);
    }

    /// <summary>dbt null: native.</summary>
    public static KernelRun Boot(DbtOptions? dbt, int vcpus, ExecutionControl control, string? cmdline = null, long maxInstructions = 2_000_000_000,
        bool countNative = true, Action<Machine, KernelDbt?>? setup = null, TimeSpan? watchdog = null)
    {
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = control, MaxInstructions = maxInstructions,
            Console = console, CommandLine = cmdline,
        });
        var elf = File.ReadAllBytes(KernelPath);
        m.LoadElf(elf, "kernel.elf");
        KernelDbt? d = null;
        if (dbt is not null)
            d = KernelDbt.Attach(m, dbt with { Kernel = Kernel.KernelImage.FromElf(elf, "kernel.elf") });
        long outside = 0;
        ulong first = 0;
        ulong rb = m.ReservedBase, rs = m.ReservedSize;
        if (d is not null && countNative)
            m.OnBlockDecoded((_, va, pa) =>
            {
                if (pa - rb < rs) return;
                // Kernel code outside the cache (user code is never translated).
                if ((long)va >= 0) return;
                if (Interlocked.Increment(ref outside) == 1) first = va;
            });
        setup?.Invoke(m, d);
        // A hang guard, not a time limit: free-running multi-vCPU runs on this 2-core host vary a lot.
        using var cts = new CancellationTokenSource(watchdog ?? TimeSpan.FromSeconds(60));
        var r = m.Run(cts.Token);
        return new KernelRun(r, Encoding.ASCII.GetString(console.ToArray()), d, outside, first);
    }
}
