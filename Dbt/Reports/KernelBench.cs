using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;

namespace Harness.Dbt.Reports;

/// <summary>The guest kernel's measured workloads and the translator configurations a benchmark compares.</summary>
public static class KernelWorkloads
{
    /// <summary>The lmbench-style programs and the file server: every default workload that prints insns_per_op.</summary>
    public static readonly IReadOnlyList<string> Measured =
        ["null_syscall", "read1", "write1", "open_close", "stat", "page_fault", "pipe_rtt", "spawn_exit", "fileserver"];

    /// <summary>The cheapest four, for smoke runs (--quick).</summary>
    public static readonly IReadOnlyList<string> Quick = ["null_syscall", "read1", "stat", "page_fault"];

    public static readonly IReadOnlyList<string> Configurations = ["off", .. DbtOptions.Configurations];

    /// <summary>null for "off" (native).</summary>
    public static DbtOptions? Options(string configuration) => configuration == "off" ? null : DbtOptions.Named(configuration);
}

/// <summary>The counters at one instant of a run: the end of a pass of the workload.</summary>
public readonly record struct BenchMark(long Instructions, long DispatcherEntries, long JumptableMisses, long CallOuts, long ChainedEdges, TimeSpan Wall)
{
    public static BenchMark operator -(BenchMark a, BenchMark b) => new(a.Instructions - b.Instructions, a.DispatcherEntries - b.DispatcherEntries,
        a.JumptableMisses - b.JumptableMisses, a.CallOuts - b.CallOuts, a.ChainedEdges - b.ChainedEdges, a.Wall - b.Wall);
}

/// <summary>One boot of the kernel running one workload several times in a row (<see cref="KernelBench.Run"/>).</summary>
public sealed record WorkloadRun
{
    public required string Workload { get; init; }
    public required string Configuration { get; init; }
    public required int Vcpus { get; init; }
    /// <summary>Which repetition of the same run this is (host times are taken as the minimum over repetitions).</summary>
    public int Repeat { get; init; }
    /// <summary>insns_per_op the guest measured in each pass (null: the pass printed none).</summary>
    public required IReadOnlyList<long?> InsnsPerOp { get; init; }
    /// <summary>Counters when the kernel started the workload the first time, then at the end of each pass.</summary>
    public required IReadOnlyList<BenchMark> Marks { get; init; }
    public required RunResult Result { get; init; }
    /// <summary>The guest's result lines with every instruction-count field removed (equal across configurations).</summary>
    public required IReadOnlyList<string> Results { get; init; }
    public required DbtStats? Stats { get; init; }
    /// <summary>Host time spent in the dispatcher (translation, chaining, jumptable fills, call-outs).</summary>
    public required TimeSpan DispatcherTime { get; init; }
    /// <summary>Blocks the interpreter decoded: translated runs re-decode cache pages that blocks and chaining patches were written to.</summary>
    public long BlocksDecoded => Result.Vcpus.Sum(v => v.BlocksDecoded);
    public required string Console { get; init; }
    /// <summary>Why the run does not count (machine stop, failing workload, missing measurement), or null.</summary>
    public string? Error { get; init; }

    /// <summary>
    /// The steady state: every pass after the second. The first pass translates the workload's paths;
    /// the second still meets a few new edges of the kernel's own init loop (its way back to spawn
    /// the next program, taken first after pass 1), after that no pass meets new code.
    /// </summary>
    public BenchMark Steady => Marks.Count < 4 ? default : Marks[^1] - Marks[WarmUpPasses];

    /// <summary>Boot (from the kernel's first line) and the first two passes.</summary>
    public BenchMark WarmUp => Marks.Count < 3 ? default : Marks[WarmUpPasses] - Marks[0];

    public const int WarmUpPasses = 2;

    /// <summary>The last pass's insns_per_op (steady state).</summary>
    public long? SteadyInsnsPerOp => InsnsPerOp.Count > 0 ? InsnsPerOp[^1] : null;
}

/// <summary>
/// Boots the guest kernel with "selftest=0 run=W,W,...,W,true_prog" (one workload, passes times) natively or
/// under a DBT configuration, under the deterministic execution control (so instruction counts are
/// exact and reproducible), and records the counters each time a pass ends (the kernel's
/// "workload W exit=N" line, written on the one host thread that runs every vCPU). One workload per
/// boot keeps the file system state the same for every configuration: a multi-threaded workload
/// that ran before (the file server) leaves a state that depends on timer-driven scheduling, which
/// changes later workloads' per-operation costs by up to 20 %.
/// </summary>
public static class KernelBench
{
    public const long Quantum = 1000;
    /// <summary>A bundled program that does nothing, run after the last pass.</summary>
    public const string Sentinel = "true_prog";

    public static WorkloadRun Run(byte[] kernelElf, string configuration, string workload, int vcpus, int passes, CancellationToken cancel = default, string kernelName = "kernel.elf")
    {
        if (passes < 1) throw new ArgumentOutOfRangeException(nameof(passes), "at least one pass");
        var options = KernelWorkloads.Options(configuration);
        // The trailing program keeps init's exit from its loop (a new path) out of the last pass.
        string cmdline = "selftest=0 run=" + string.Join(',', Enumerable.Repeat(workload, passes)) + "," + Sentinel;
        var marks = new List<BenchMark>();
        var clock = new Stopwatch();
        Machine? machine = null;
        KernelDbt? dbt = null;
        BenchMark Now()
        {
            long insns = 0;
            foreach (var v in machine!.Vcpus) insns += v.Executed;
            var st = dbt?.Stats;
            return new BenchMark(insns, st?.DispatcherEntries ?? 0, st?.IndirectDispatches ?? 0, st?.CallOuts ?? 0, st?.ChainedEdges ?? 0, clock.Elapsed);
        }
        var console = new LineTap(line =>
        {
            if (line.StartsWith("kernel: boot ", StringComparison.Ordinal)) { if (marks.Count == 0) marks.Add(Now()); }
            else if (line.StartsWith($"workload {workload} exit=", StringComparison.Ordinal)) marks.Add(Now());
        });
        using (machine = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = new Deterministic(Quantum), MaxInstructions = 4_000_000_000,
            Console = console, CommandLine = cmdline,
        }))
        {
            machine.LoadElf(kernelElf, kernelName);
            long dispatcherTicks = 0;
            if (options is not null)
            {
                dbt = KernelDbt.Attach(machine, options with { Kernel = Kernel.KernelImage.FromElf(kernelElf, kernelName) });
                // Asked first, it times the DBT's own handler (which then is not asked again).
                var dbtAgent = dbt.HostAgent;
                machine.Attach(new HookAgent
                {
                    OnVmcall = v =>
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        bool handled = dbtAgent.Vmcall(v);
                        dispatcherTicks += Stopwatch.GetTimestamp() - t0; // one host thread (deterministic): no race
                        return handled;
                    },
                }, first: true);
            }
            clock.Start();
            var result = machine.Run(cancel);
            clock.Stop();
            string text = console.Text;
            var perPass = Regex.Matches(text, $@"^result {Regex.Escape(workload)}(_\w+)? .*?insns_per_op=(\d+)", RegexOptions.Multiline)
                .Select(m => (long?)long.Parse(m.Groups[2].Value)).ToList();
            var exits = Regex.Matches(text, $@"^workload {Regex.Escape(workload)} exit=(\S+)", RegexOptions.Multiline).Select(m => m.Groups[1].Value).ToList();
            string? error = result.Reason != StopReason.Exited || result.ExitStatus != 0 ? $"machine stopped: {result.Reason} (status {result.ExitStatus}): {result.Message}"
                : dbt?.Stats.Failure is { } f ? $"dbt: {f}"
                : exits.Count != passes || exits.Any(x => x != "0") ? $"workload exits: {string.Join(", ", exits)} (expected {passes} x 0)"
                : perPass.Count != passes ? $"{perPass.Count} insns_per_op results for {passes} passes"
                : marks.Count != passes + 1 ? $"{marks.Count} counter marks for {passes} passes"
                : null;
            var results = Regex.Matches(text, @"^result .*$", RegexOptions.Multiline)
                .Select(m => Regex.Replace(m.Value, @" (insns|insns_per_op|insns_per_fault|insns_per_roundtrip)=\d+", "")).ToList();
            return new WorkloadRun
            {
                Workload = workload, Configuration = configuration, Vcpus = vcpus, InsnsPerOp = perPass, Marks = marks,
                Result = result, Results = results, Stats = dbt?.Stats, Console = text, Error = error,
                DispatcherTime = Stopwatch.GetElapsedTime(0, dispatcherTicks),
            };
        }
    }

    /// <summary>Collects the console as text and reports each complete line (called on the vCPU's thread, inside its out instruction).</summary>
    private sealed class LineTap(Action<string> onLine) : Stream
    {
        private readonly StringBuilder all = new();
        private readonly StringBuilder line = new();

        public string Text { get { lock (all) return all.ToString(); } }

        public override void WriteByte(byte value)
        {
            char c = (char)value;
            lock (all) all.Append(c);
            if (c != '\n') { line.Append(c); return; }
            string l = line.ToString();
            line.Clear();
            onLine(l);
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            for (int i = 0; i < count; i++) WriteByte(buffer[offset + i]);
        }

        public override void Flush() { }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
