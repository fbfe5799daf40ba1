using System.Text;
using System.Text.RegularExpressions;
using Harness.Dbt;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using Harness.Properties.Generators;
using Harness.Properties.Run;

namespace Harness.Verification.Generic;

/// <summary>The guest kernel under Coyote: which image, what it runs, under which translator.</summary>
public sealed record KernelScenarioSpec
{
    public required string ImagePath { get; init; }
    /// <summary>Workloads the kernel runs after its boot self-test (its run= list); empty: the self-test only.</summary>
    public IReadOnlyList<string> Workloads { get; init; } = [];
    public int Vcpus { get; init; } = 2;
    /// <summary>off (native), default or no-callret.</summary>
    public string Dbt { get; init; } = "default";
    /// <summary>The translator's options (a planted bug); Kernel, CallRet and Clients are set from the spec.</summary>
    public DbtOptions? Options { get; init; }
    public IReadOnlyList<string> Clients { get; init; } = [];
    /// <summary>The planted bug's name (for the scenario's name), if Options plants one.</summary>
    public string? Planted { get; init; }
    /// <summary>Caps the code cache's block pool (KiB) so it fills and is flushed under Coyote (a world stop); null: the whole region.</summary>
    public int? CacheKiB { get; init; }
    /// <summary>Switches the DBT on when vCPU 0 has retired this many instructions (a world stop); null: on from boot.</summary>
    public long? OnAt { get; init; }
    /// <summary>
    /// Start every iteration from a snapshot taken once, natively and deterministically, when vCPU 0
    /// has retired this many instructions; the DBT switches on there (a world stop under Coyote).
    /// </summary>
    public long? SnapshotAt { get; init; }
    /// <summary>The same, at the first console line containing this text (e.g. "selftest: kernel ok": the workloads start next).</summary>
    public string? SnapshotMarker { get; init; }
    public long MaxInstructions { get; init; } = 400_000_000;
    public CoyoteOptions Control { get; init; } = new();
    /// <summary>Sc, or Tso: store buffers Coyote drains (the native reference run stays sequentially consistent).</summary>
    public MemoryModel MemoryModel { get; init; } = MemoryModel.Sc;
    /// <summary>The happens-before race detector as one more monitor: a race outside the kernel's annotated set fails the execution.</summary>
    public bool Races { get; init; }

    public string CommandLine => "run=" + string.Join(',', Workloads);
}

/// <summary>A generated program (Properties/) under Coyote: which one, on how many vCPUs, under which translator.</summary>
public sealed record ProgramScenarioSpec
{
    /// <summary>Picks the program: the same seed, vCPUs and size give the same program.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Programs Seed, Seed+1, ..., Seed+Count-1: each iteration runs one, chosen by Coyote (so a trace names it).</summary>
    public int Count { get; init; } = 1;
    public int Vcpus { get; init; } = 2;
    /// <summary>The generator's size (as a property case's): larger programs have more pieces.</summary>
    public int Size { get; init; } = 50;
    public string Dbt { get; init; } = "default";
    public bool Prof { get; init; }
    public DbtOptions? Options { get; init; }
    /// <summary>The planted bug's name (for the scenario's name), if Options plants one.</summary>
    public string? Planted { get; init; }
    /// <summary>Cache flushes (world stops) per execution, each at a vCPU 0 instruction count Coyote chooses.</summary>
    public int Flushes { get; init; }
    public CoyoteOptions Control { get; init; } = new();

    public GuestProgram ProgramOf(ulong seed) => ProgramGen.Random(new Rng(seed), GenOptions.Default with { MinVcpus = Vcpus, MaxVcpus = Vcpus }, Size);
}

/// <summary>
/// Scenarios that know no bug: the real guest kernel, or a generated program, under the translator,
/// with monitors that hold for every correct translator (no DBT failure, which includes a dispatcher
/// entered with interrupts on; no kernel panic or ASSERT; no triple fault, deadlock, runaway or host
/// exception; the results of a native reference run). The reference is computed once, when the
/// scenario is made, not per iteration.
/// </summary>
public static class GenericScenarios
{
    private static readonly Regex ResultLine = new(@"^result .*$", RegexOptions.Multiline);
    // Measurements that count instructions differ by design between native and translated runs.
    private static readonly Regex CountFields = new(@" (insns|insns_per_op|insns_per_fault|insns_per_roundtrip)=\d+");
    private static readonly Regex WorkloadLine = new(@"^workload (\S+) exit=(\d+)", RegexOptions.Multiline);

    /// <summary>What a kernel run printed that must not depend on the translator or the interleaving.</summary>
    public sealed record KernelResults(int ExitStatus, IReadOnlyList<string> Results, IReadOnlyList<string> WorkloadExits)
    {
        public static KernelResults Of(RunResult r, string console) => new(
            r.Reason == StopReason.Exited ? r.ExitStatus : -1,
            ResultLine.Matches(console).Select(m => CountFields.Replace(m.Value, "")).ToList(),
            WorkloadLine.Matches(console).Select(m => $"{m.Groups[1].Value}={m.Groups[2].Value}").ToList());
    }

    /// <summary>The guest kernel's native run (deterministic control): the reference every iteration is compared with.</summary>
    public static (KernelResults Results, RunResult Run, string Console) KernelReference(KernelScenarioSpec spec, byte[] image)
    {
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions
        {
            Vcpus = spec.Vcpus, MemoryBytes = 64UL << 20, ReservedBytes = 16UL << 20, MaxInstructions = spec.MaxInstructions,
            Control = new Deterministic(1000), Console = console, CommandLine = spec.CommandLine,
        });
        m.LoadElf(image, Path.GetFileName(spec.ImagePath));
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        string text = Encoding.ASCII.GetString(console.ToArray());
        return (KernelResults.Of(r, text), r, text);
    }

    /// <summary>
    /// The guest kernel booted under CoyoteControl (its .data/.bss accesses, locked operations,
    /// halts and chaining patches are the scheduling points; interrupt arrival is Coyote's bounded
    /// delay), natively or under the translator. Throws when the image cannot be read or its native
    /// reference run does not exit 0 (bad input, not a bug).
    /// </summary>
    public static Scenario Kernel(KernelScenarioSpec spec)
    {
        if (spec.Vcpus is < 1 or > 4) throw new ArgumentException($"the kernel scenario runs on 1..4 vCPUs (got {spec.Vcpus})");
        byte[] image;
        try { image = File.ReadAllBytes(spec.ImagePath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ArgumentException($"{spec.ImagePath}: {e.Message}", e); }
        var segments = Smp.Boot.ElfLoader.Parse(image, spec.ImagePath).Segments.Where(g => (g.Flags & 2) != 0).ToArray();
        if (segments.Length != 1) throw new ArgumentException($"{spec.ImagePath}: expected one writable segment (.data and .bss), found {segments.Length}");
        var symbols = Harness.Dbt.Kernel.KernelImage.FromElf(image, spec.ImagePath);
        var kernel = spec.Dbt == "off" ? null : symbols;
        var intended = spec.Races ? Races.IntendedRaces.For(symbols, image) : null;
        var symbolize = Symbolizer.For(symbols);
        Races.RaceDetector? detector = null;
        var reference = KernelReference(spec, image);
        if (reference.Results.ExitStatus != 0 || reference.Console.Contains("kernel panic"))
            throw new ArgumentException($"{spec.ImagePath} ({spec.CommandLine}): the native reference run did not exit 0 ({reference.Run.Reason}: {reference.Run.Message}): " +
                "nothing to compare with\n" + Tail(reference.Console));
        string name = Path.GetFileNameWithoutExtension(spec.ImagePath);
        var snapshot = spec.SnapshotAt is not null || spec.SnapshotMarker is not null ? TakeSnapshot(spec, image) : null;
        KernelDbt? dbt = null;
        long outside = 0;
        ulong firstOutside = 0;
        var data = segments[0];
        var shared = PointFilters.SharedRange(data.VirtAddr, data.VirtAddr + data.MemSize);
        var counters = new ScenarioCounters();
        var coverage = new Coverage { PreciseInterrupts = spec.Dbt == "drk" };
        CoyoteControl? control = null;
        return new Scenario($"kernel({name}, {spec.Dbt}, {spec.Vcpus} vCPUs, {spec.CommandLine}{(spec.CacheKiB is { } c ? $", {c} KiB cache" : "")}{(spec.OnAt is { } a ? $", on at {a}" : "")}{(snapshot is not null ? $", from a snapshot at {snapshot.At}" : "")}{(spec.Planted is null ? "" : $", planted {spec.Planted}")}{(spec.MemoryModel == MemoryModel.Tso ? ", TSO" : "")}{(spec.Races ? ", races" : "")})",
            ctx =>
            {
                var m = new Machine(ctx.Options(spec.Vcpus, spec.MaxInstructions, memoryBytes: 64UL << 20, reservedBytes: 16UL << 20,
                    commandLine: spec.CommandLine, memoryModel: spec.MemoryModel));
                m.LoadElf(image, name);
                if (snapshot is not null) m.Restore(snapshot);
                detector = spec.Races ? new Races.RaceDetector(m, intended) : null;
                dbt = null;
                outside = 0;
                control = ctx.Control;
                if (kernel is not null)
                {
                    var o = spec.Options ?? DbtOptions.Default;
                    dbt = KernelDbt.Attach(m, o.As(spec.Dbt) with
                    {
                        Kernel = kernel, Clients = [.. o.Clients, .. spec.Clients],
                        MainPoolLimit = spec.CacheKiB is { } kib ? (ulong)kib * 1024 : o.MainPoolLimit,
                        SwitchOnAt = snapshot?.At ?? spec.OnAt ?? o.SwitchOnAt,
                    });
                    // Monitor: with the DBT on from boot and never switched off, no kernel
                    // instruction runs outside the code cache (a flush or a late switchon resumes
                    // vCPUs at native recovery points by design).
                    coverage.Attach(ctx.Control, m, dbt, kernel);
                    if (spec.CacheKiB is not null || spec.OnAt is not null || snapshot is not null) return m;
                    ulong rb = m.ReservedBase, rs = m.ReservedSize;
                    m.Attach(new HookAgent
                    {
                        OnBlockDecoded = (_, va, pa) =>
                        {
                            if (pa - rb < rs || (long)va >= 0) return;
                            if (Interlocked.Increment(ref outside) == 1) firstOutside = va;
                        },
                    });
                }
                else coverage.Attach(ctx.Control, m, null, symbols);
                return m;
            },
            run =>
            {
                coverage.EndExecution(control!.PointsTaken);
                counters.Add("executions checked", 1);
                counters.Add("guest instructions", run.Result.Vcpus.Sum(v => v.Instructions));
                counters.Add("interrupts delivered", run.Result.Vcpus.Sum(v => v.Interrupts));
                if (dbt is not null)
                {
                    counters.Add("dispatcher entries", dbt.Stats.DispatcherEntries);
                    counters.Add("edges chained", dbt.Stats.ChainedEdges);
                    counters.Add("cache flushes", dbt.Stats.Flushes);
                    counters.Add("switchons", dbt.Stats.SwitchOns);
                }
                if (dbt?.Stats.Failure is { } failure) Verify.Fail($"DBT failure: {failure}");
                if (detector is not null)
                {
                    counters.Add("plain accesses race-checked", detector.Checked);
                    counters.Add("intended races left out", detector.IntendedSeen);
                    if (detector.Races.Count > 0) Verify.Fail(Races.RaceDetector.Summary(detector.Races, symbolize));
                }
                var panic = run.Console.Split('\n').FirstOrDefault(l => l.Contains("kernel panic"));
                Verify.That(panic is null, $"kernel panic: {panic}{Tail(run.Console)}");
                run.ExpectExit(0);
                Verify.That(outside == 0, $"kernel code ran outside the code cache: {outside} blocks, the first at 0x{firstOutside:x}");
                var got = KernelResults.Of(run.Result, run.Console);
                Verify.That(got.WorkloadExits.SequenceEqual(reference.Results.WorkloadExits),
                    $"workload exits differ from the native run's: {Diff(reference.Results.WorkloadExits, got.WorkloadExits)}");
                Verify.That(got.Results.SequenceEqual(reference.Results.Results),
                    $"result lines differ from the native run's: {Diff(reference.Results.Results, got.Results)}");
            })
        {
            Control = spec.Control with { PointFilter = spec.Control.PointFilter ?? shared },
            Counters = counters,
            Coverage = coverage,
            Resumes = snapshot is not null,
            Symbols = symbols,
        };
    }

    /// <summary>
    /// Boots the kernel natively under deterministic control to the spec's point (an instruction
    /// count of vCPU 0, or the first console output containing the marker) and captures the machine.
    /// A point the run never reaches is bad input.
    /// </summary>
    public static MachineSnapshot TakeSnapshot(KernelScenarioSpec spec, byte[] image)
    {
        var console = new MarkerStream(spec.SnapshotMarker);
        using var m = new Machine(new MachineOptions
        {
            Vcpus = spec.Vcpus, MemoryBytes = 64UL << 20, ReservedBytes = 16UL << 20, MaxInstructions = spec.MaxInstructions,
            Control = new Deterministic(1000), Console = console, CommandLine = spec.CommandLine,
        });
        m.LoadElf(image, Path.GetFileName(spec.ImagePath));
        const string Point = "the snapshot point";
        if (spec.SnapshotAt is { } at)
        {
            var stop = new HookAgent { OnHostEvent = v => m.Stop(StopReason.Interrupted, 0, Point) };
            m.Attach(stop);
            m.ScheduleHostEvent(stop, at);
        }
        console.Seen = () => m.Stop(StopReason.Interrupted, 0, Point);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        if (r.Reason != StopReason.Interrupted || r.Message != Point)
            throw new ArgumentException($"{spec.ImagePath} ({spec.CommandLine}): the native run never reached the snapshot point " +
                $"({(spec.SnapshotAt is { } n ? $"instruction {n:N0} of vCPU 0" : $"console text \"{spec.SnapshotMarker}\"")}): it ended with {r.Reason}: {r.Message}");
        return m.Capture(console.ToArray());
    }

    /// <summary>A console that calls Seen once, when the text so far first contains the marker.</summary>
    private sealed class MarkerStream(string? marker) : MemoryStream
    {
        public Action? Seen { get; set; }
        private bool seen;
        private int scanned;

        public override void WriteByte(byte value)
        {
            base.WriteByte(value);
            Check();
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            base.Write(buffer, offset, count);
            Check();
        }

        private void Check()
        {
            if (seen || marker is null || Length - scanned < marker.Length) return;
            var text = Encoding.ASCII.GetString(GetBuffer(), 0, (int)Length);
            if (text.IndexOf(marker, Math.Max(0, scanned - marker.Length), StringComparison.Ordinal) >= 0)
            {
                seen = true;
                Seen?.Invoke();
            }
            scanned = (int)Length;
        }
    }

    /// <summary>
    /// A generated program on 2..4 vCPUs under CoyoteControl, translated, compared with its native
    /// run (the same comparison as the translated-equals-native property: each vCPU's final
    /// registers and flags, counters, the data region, the console). Its shared page and done flags
    /// are the scheduling points with the dispatcher's chaining patches; its timer's ticks arrive
    /// at Coyote's delays. Throws when the native run does not exit 0 (a generator bug).
    /// </summary>
    public static Scenario Program(ProgramScenarioSpec spec)
    {
        if (spec.Vcpus is < 1 or > Layout.MaxVcpus) throw new ArgumentException($"a generated program runs on 1..{Layout.MaxVcpus} vCPUs (got {spec.Vcpus})");
        if (!DbtOptions.Configurations.Contains(spec.Dbt)) throw new ArgumentException($"the program scenario runs translated: --dbt {string.Join(", ", DbtOptions.Configurations)} (got {spec.Dbt})");
        if (spec.Count is < 1 or > 100_000) throw new ArgumentException($"the program scenario explores 1..100000 programs (got {spec.Count})");
        // Every program's native run first: a generator bug is bad input, not a translator bug.
        var programs = new (ulong Seed, GuestProgram Program, RunOutcome Native)[spec.Count];
        for (int k = 0; k < spec.Count; k++)
        {
            ulong seed = spec.Seed + (ulong)k;
            var program = spec.ProgramOf(seed);
            var native = ProgramRunner.Run(program, new RunSpec());
            if (native.Result.Reason != StopReason.Exited || native.Result.ExitStatus != 0)
                throw new InvalidOperationException($"program {seed}: the native run did not exit 0 ({native.Result.Reason}: {native.Result.Message}): a generator bug\n{program}");
            programs[k] = (seed, program, native);
        }
        ProgramRunner.PreparedRun? prepared = null;
        int current = 0;
        var counters = new ScenarioCounters();
        var coverage = new Coverage { PreciseInterrupts = spec.Dbt == "drk" };
        CoyoteControl? control = null;
        var doneFlags = PointFilters.SharedRange(Layout.Data, Layout.Data + 0x1000);
        var sharedPage = PointFilters.SharedRange(Layout.Shared, Layout.Shared + 0x1000);
        string which = spec.Count == 1 ? $"seed {spec.Seed}" : $"seeds {spec.Seed}..{spec.Seed + (ulong)spec.Count - 1}";
        string planted = (spec.Flushes > 0 ? $", {spec.Flushes} flush{(spec.Flushes > 1 ? "es" : "")}" : "") + (spec.Planted is null ? "" : $", planted {spec.Planted}");
        if (spec.Flushes is < 0 or > 100) throw new ArgumentException($"--flushes must be between 0 and 100 (got {spec.Flushes})");
        return new Scenario($"program({which}, {spec.Vcpus} vCPUs, {spec.Dbt}{(spec.Prof ? "+prof" : "")}{planted})",
            ctx =>
            {
                var choose = Microsoft.Coyote.Random.Generator.Create();
                current = spec.Count == 1 ? 0 : choose.NextInteger(spec.Count);
                var (_, program, native) = programs[current];
                // A flush anywhere in vCPU 0's run (translated runs are longer: the early part of
                // the translated run, where the translations and their interrupt frames are).
                int span = (int)Math.Clamp(native.Result.Vcpus[0].Instructions, 1, int.MaxValue);
                var events = Enumerable.Range(0, spec.Flushes).Select(_ => new HostEvent(choose.NextInteger(span), HostAction.Flush)).ToList();
                var runSpec = new RunSpec { Configuration = spec.Dbt, Prof = spec.Prof, Options = spec.Options, MaxInstructions = native.Budget, Events = events };
                prepared = ProgramRunner.Prepare(program, runSpec, ctx.Control, ctx.Console);
                control = ctx.Control;
                coverage.Attach(ctx.Control, prepared.Machine, prepared.Dbt, program.Image.Kernel);
                return prepared.Machine;
            },
            run =>
            {
                var (seed, program, native) = programs[current];
                var outcome = prepared!.Collect(run.Result);
                coverage.EndExecution(control!.PointsTaken);
                counters.Add("executions checked", 1);
                counters.Add("guest instructions", run.Result.Vcpus.Sum(v => v.Instructions));
                counters.Add("interrupts delivered", run.Result.Vcpus.Sum(v => v.Interrupts));
                counters.Add("exceptions delivered", run.Result.Vcpus.Sum(v => v.Exceptions));
                if (outcome.Stats is { } st)
                {
                    counters.Add("dispatcher entries", st.DispatcherEntries);
                    counters.Add("edges chained", st.ChainedEdges);
                    counters.Add("cache flushes", st.Flushes);
                }
                string what = $"program {seed} ({spec.Vcpus} vCPUs; harness explore program --program {seed} repeats it alone):\n{program}";
                if (outcome.Stats?.Failure is { } failure) Verify.Fail($"DBT failure: {failure}\n{what}");
                var diff = StateDiff.Compare(program, native, "native", outcome, "translated");
                Verify.That(diff is null, $"the translated run differs from the native run:\n{diff}" +
                    (run.Result.Reason == StopReason.Exited ? "" : $"  ({run.Result.Reason}: {run.Result.Message})\n") + what);
            })
        {
            // The program is the iteration's first choice; every program starts at the same entry.
            Entry = Layout.Code,
            Control = spec.Control with { PointFilter = spec.Control.PointFilter ?? ((kind, address) => doneFlags(kind, address) || sharedPage(kind, address)) },
            NeedsSchedulingPoints = spec.Vcpus > 1,
            Counters = counters,
            Coverage = coverage,
            Symbols = programs[0].Program.Image.Kernel,
        };
    }

    private static string Tail(string console) =>
        console.Length == 0 ? "" : "\nconsole (last lines):\n" + string.Join('\n', console.TrimEnd().Split('\n').TakeLast(8));

    /// <summary>The first line where two lists differ.</summary>
    private static string Diff(IReadOnlyList<string> expected, IReadOnlyList<string> got)
    {
        for (int i = 0; i < Math.Max(expected.Count, got.Count); i++)
        {
            string e = i < expected.Count ? expected[i] : "(none)", g = i < got.Count ? got[i] : "(none)";
            if (e != g) return $"line {i + 1}: native `{e}`, translated `{g}`";
        }
        return "equal";
    }
}
