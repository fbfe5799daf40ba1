using System.Text.Json;
using System.Text.Json.Serialization;
using Harness.Verification.Scenarios;

namespace Harness.Verification.Generic;

/// <summary>
/// A scenario's options as the command line gives them (null: the scenario's default). Saved in
/// every trace so that `harness replay` rebuilds the same scenario.
/// </summary>
public sealed record ScenarioArgs
{
    public int? Vcpus { get; init; }
    /// <summary>off, default or no-callret; null: default (or the planted bug's own configuration).</summary>
    public string? Dbt { get; init; }
    public string? Planted { get; init; }
    public bool Prof { get; init; }
    public string[] Clients { get; init; } = [];
    /// <summary>A translator author's assemblies of rules and clients (loaded before the scenario is made), by path.</summary>
    public string[] Rules { get; init; } = [];
    /// <summary>MNEMONIC=RULE: which registered rule translates a mnemonic.</summary>
    public string[] RuleOverrides { get; init; } = [];
    public string[] Workloads { get; init; } = [];
    /// <summary>The guest kernel image (kernel scenarios).</summary>
    public string? Kernel { get; init; }
    /// <summary>Which generated program (the program scenario): the first of Programs.</summary>
    public ulong? Program { get; init; }
    /// <summary>How many programs (Program, Program+1, ...) the program scenario picks from, one per iteration.</summary>
    public int? Programs { get; init; }
    /// <summary>Program: cache flushes per execution at Coyote-chosen instruction counts of vCPU 0.</summary>
    public int? Flushes { get; init; }
    /// <summary>Kernel: cap the code cache's block pool at this many KiB (it fills and is flushed: world stops under Coyote).</summary>
    public int? CacheKiB { get; init; }
    /// <summary>Kernel: switch the DBT on when vCPU 0 has retired this many instructions.</summary>
    public long? OnAt { get; init; }
    /// <summary>Kernel: every iteration starts from a snapshot at this instruction count of vCPU 0.</summary>
    public long? SnapshotAt { get; init; }
    /// <summary>Kernel: every iteration starts from a snapshot at the first console text containing this.</summary>
    public string? SnapshotMarker { get; init; }
    /// <summary>Interrupt arrival: a delay in [0, this) instructions, chosen by Coyote.</summary>
    public int? DelayBound { get; init; }
    /// <summary>The x86-TSO memory model: a store buffer per vCPU, drained when Coyote chooses (docs/tso.md).</summary>
    public bool Tso { get; init; }
    /// <summary>The happens-before data-race detector: a race is a failure, even when the run went right (docs/tso.md).</summary>
    public bool Races { get; init; }
}

/// <summary>A scenario the tool can explore by name: what it is, which options it takes, how it is made.</summary>
public sealed record ScenarioEntry(string Name, string Description, bool Generic, string[] Accepts, Func<ScenarioArgs, Scenario> Make);

/// <summary>
/// Every scenario `harness explore` knows: the generic ones (kernel, program), which know no bug,
/// and the bespoke guests, each built around one bug in a planted and a correct form.
/// </summary>
public static class ScenarioRegistry
{
    private static readonly string[] KernelOptions = ["vcpus", "dbt", "planted", "prof", "client", "rules", "rule", "workload", "kernel", "dbt-cache-kib", "dbt-on-at", "snapshot-at", "snapshot-marker", "delay-bound", "tso", "races"];
    private static readonly string[] ProgramOptions = ["vcpus", "dbt", "planted", "prof", "client", "rules", "rule", "program", "programs", "flushes", "delay-bound"];

    public static readonly IReadOnlyList<ScenarioEntry> All =
    [
        new("kernel", "the guest kernel (its self-test, then the --workload list) under the translator: no DBT failure (IF=1 at the dispatcher included), no panic or ASSERT, " +
            "exit 0, no kernel code outside the cache, result lines equal to a native run's; --dbt-cache-kib 12 flushes (world stops) under Coyote", Generic: true, KernelOptions, Kernel),
        new("program", "generated programs (Properties/; --program picks the first, --programs how many, one per iteration) on 1..4 vCPUs under the translator, timer ticks at Coyote's delays: " +
            "no DBT failure, final registers, flags and memory equal to its native run's; --flushes N flushes the cache (world stops) at Coyote-chosen points", Generic: true, ProgramOptions, Program),
        Bespoke("lost-update-plain", "two vCPUs increment a shared counter with a plain add (planted: the lost update)", _ => MachineScenarios.LostUpdate(atomic: false)),
        Bespoke("lost-update-locked", "the same with lock add (correct)", _ => MachineScenarios.LostUpdate(atomic: true)),
        Bespoke("interrupt-scratch-percpu", "one vCPU parks a scratch value in a per-CPU cell the timer handler also uses (planted)", _ => MachineScenarios.InterruptScratch(scratchOnStack: false)),
        Bespoke("interrupt-scratch-stack", "the same with the scratch value on the stack (correct)", _ => MachineScenarios.InterruptScratch(scratchOnStack: true)),
        Bespoke("jumptable-lookup-with-interrupts", "the jumptable race guest with the inline lookup run with interrupts on (planted)", _ => DbtScenarios.JumpTableLookup(lookupWithInterrupts: true)),
        Bespoke("jumptable-lookup-cli", "the jumptable race guest with the correct lookup", _ => DbtScenarios.JumpTableLookup(lookupWithInterrupts: false)),
        Bespoke("chaining-patch-torn", "two vCPUs run a loop whose branches are chained one byte at a time (planted)", _ => DbtScenarios.ChainingPatch(torn: true)),
        Bespoke("chaining-patch-atomic", "the same with the atomic patch (correct)", _ => DbtScenarios.ChainingPatch(torn: false)),
        Bespoke("tx-nextpc-no-restore", "the tx-nextpc guest with iretq not restoring tx-nextpc-loc (planted)", _ => DbtScenarios.TxNextPcRestore(noRestore: true)),
        Bespoke("tx-nextpc-restore", "the tx-nextpc guest with the correct iretq", _ => DbtScenarios.TxNextPcRestore(noRestore: false)),
        new("kernel-selftest", "the guest kernel's self-test natively (--kernel kernel-broken-spinlock.elf plants a spinlock bug the kernel's own ASSERT catches)",
            Generic: false, ["kernel", "vcpus", "tso", "races"], a => MachineScenarios.KernelSelftest(Required(a.Kernel, "kernel-selftest", "--kernel"), a.Vcpus ?? 2, memoryModel: Model(a), races: a.Races)),
    ];

    private static ScenarioEntry Bespoke(string name, string description, Func<ScenarioArgs, Scenario> make) => new(name, description, Generic: false, [], make);

    /// <summary>The scenario name names with these options; an unknown name or an option it does not take is an ArgumentException naming it.</summary>
    public static Scenario Create(string name, ScenarioArgs args)
    {
        var entry = All.FirstOrDefault(e => e.Name == name)
            ?? throw new ArgumentException($"unknown scenario '{name}' (known: {string.Join(", ", All.Select(e => e.Name))})");
        var given = Given(args).Where(o => !entry.Accepts.Contains(o)).ToList();
        if (given.Count > 0)
            throw new ArgumentException($"scenario {name} takes no --{string.Join(", --", given)}" +
                (entry.Generic ? "" : " (a bespoke scenario comes in a planted and a correct form, each its own name: see --list)"));
        return entry.Make(args);
    }

    private static IEnumerable<string> Given(ScenarioArgs a)
    {
        if (a.Vcpus is not null) yield return "vcpus";
        if (a.Dbt is not null) yield return "dbt";
        if (a.Planted is not null) yield return "planted";
        if (a.Prof) yield return "prof";
        if (a.Clients.Length > 0) yield return "client";
        if (a.Rules.Length > 0) yield return "rules";
        if (a.RuleOverrides.Length > 0) yield return "rule";
        if (a.Workloads.Length > 0) yield return "workload";
        if (a.Kernel is not null) yield return "kernel";
        if (a.Program is not null) yield return "program";
        if (a.Programs is not null) yield return "programs";
        if (a.Flushes is not null) yield return "flushes";
        if (a.CacheKiB is not null) yield return "dbt-cache-kib";
        if (a.OnAt is not null) yield return "dbt-on-at";
        if (a.SnapshotAt is not null) yield return "snapshot-at";
        if (a.SnapshotMarker is not null) yield return "snapshot-marker";
        if (a.DelayBound is not null) yield return "delay-bound";
        if (a.Tso) yield return "tso";
        if (a.Races) yield return "races";
    }

    private static Harness.Smp.Memory.MemoryModel Model(ScenarioArgs a) => a.Tso ? Harness.Smp.Memory.MemoryModel.Tso : Harness.Smp.Memory.MemoryModel.Sc;

    private static string Required(string? value, string scenario, string option) =>
        value ?? throw new ArgumentException($"scenario {scenario} needs {option}");

    /// <summary>
    /// The translator configuration and options: the planted bug's own configuration unless --dbt is
    /// given; the author's rule assemblies loaded (once per process) and their overrides and clients applied.
    /// </summary>
    private static (string Dbt, bool Prof, Harness.Dbt.DbtOptions? Options) Translator(ScenarioArgs a)
    {
        if (a.Dbt is not null && a.Dbt != "off" && !Harness.Dbt.DbtOptions.Configurations.Contains(a.Dbt))
            throw new ArgumentException($"--dbt must be off, {string.Join(", ", Harness.Dbt.DbtOptions.Configurations)} (got {a.Dbt})");
        if (a.Dbt == "off" && (a.Rules.Length > 0 || a.RuleOverrides.Length > 0 || a.Clients.Length > 0))
            throw new ArgumentException("--rules, --rule and --client change the translator: they need a translated --dbt");
        foreach (var path in a.Rules)
        {
            try { Harness.Dbt.Translate.RulePlugins.Load(new FileInfo(path)); }
            catch (Harness.Dbt.Translate.RulePlugins.PluginException e) { throw new ArgumentException(e.Message); }
        }
        var overrides = Harness.Dbt.Translate.RuleOverrides.Parse(a.RuleOverrides, out string? error) ?? throw new ArgumentException(error);
        foreach (var c in a.Clients)
            if (!Harness.Dbt.Clients.ClientRegistry.IsRegistered(c))
                throw new ArgumentException($"--client: no client named '{c}' (available: {string.Join(", ", Harness.Dbt.Clients.ClientRegistry.Names)})");
        Harness.Dbt.DbtOptions? options = null;
        string dbt = a.Dbt ?? "default";
        bool prof = a.Prof;
        if (a.Planted is not null)
        {
            var bug = PlantedBugs.Find(a.Planted);
            if (a.Dbt == "off") throw new ArgumentException($"--planted {a.Planted} is a translator bug: it needs --dbt default or no-callret");
            (dbt, prof, options) = (a.Dbt ?? bug.Configuration, a.Prof || bug.Prof, bug.Apply(Harness.Dbt.DbtOptions.Default));
        }
        if (overrides.Count > 0 || a.Clients.Length > 0)
        {
            var o = options ?? Harness.Dbt.DbtOptions.Default;
            options = o with { RuleOverrides = overrides, Clients = [.. o.Clients, .. a.Clients.Where(c => !o.Clients.Contains(c))] };
        }
        return (dbt, prof, options);
    }

    private static CoyoteOptions Control(ScenarioArgs a)
    {
        if (a.DelayBound is < 1) throw new ArgumentException($"--delay-bound must be at least 1 (got {a.DelayBound})");
        return new CoyoteOptions { InterruptDelayBound = a.DelayBound ?? 64 };
    }

    private static Scenario Kernel(ScenarioArgs a)
    {
        var (dbt, prof, options) = Translator(a);
        string[] clients = prof && !(options?.Clients.Contains("prof") ?? false) ? ["prof"] : [];
        if ((a.CacheKiB is not null || a.OnAt is not null) && dbt == "off") throw new ArgumentException("--dbt-cache-kib and --dbt-on-at need --dbt default or no-callret");
        if (a.CacheKiB is < 8) throw new ArgumentException($"--dbt-cache-kib {a.CacheKiB} is too small: the pool must hold the largest block and the interrupt entry paths at once (at least 8 KiB)");
        if (a.OnAt is < 1) throw new ArgumentException($"--dbt-on-at must be positive (got {a.OnAt})");
        if (a.SnapshotAt is < 1) throw new ArgumentException($"--snapshot-at must be positive (got {a.SnapshotAt})");
        if (a.SnapshotAt is not null && a.SnapshotMarker is not null) throw new ArgumentException("give --snapshot-at or --snapshot-marker, not both");
        if (a.Races && (a.SnapshotAt is not null || a.SnapshotMarker is not null))
            throw new ArgumentException("--races needs the run from boot: a detector started at a snapshot knows nothing of the synchronization before it (a lock held there would look unsynchronized)");
        if ((a.SnapshotAt is not null || a.SnapshotMarker is not null) && (dbt == "off" || a.OnAt is not null))
            throw new ArgumentException("a snapshot is taken natively and the DBT switches on there: it needs --dbt default or no-callret, and no --dbt-on-at");
        return GenericScenarios.Kernel(new KernelScenarioSpec
        {
            ImagePath = Required(a.Kernel, "kernel", "--kernel"),
            Workloads = a.Workloads,
            Vcpus = a.Vcpus ?? 2,
            Dbt = dbt,
            Options = options,
            Clients = clients,
            Planted = a.Planted,
            CacheKiB = a.CacheKiB,
            OnAt = a.OnAt,
            SnapshotAt = a.SnapshotAt,
            SnapshotMarker = a.SnapshotMarker,
            Control = Control(a),
            MemoryModel = Model(a),
            Races = a.Races,
        });
    }

    private static Scenario Program(ScenarioArgs a)
    {
        var (dbt, prof, options) = Translator(a);
        return GenericScenarios.Program(new ProgramScenarioSpec
        {
            Seed = a.Program ?? 1,
            Count = a.Programs ?? 1,
            Flushes = a.Flushes ?? 0,
            Planted = a.Planted,
            Vcpus = a.Vcpus ?? 2,
            Dbt = dbt,
            Prof = prof,
            Options = options,
            Control = Control(a),
        });
    }
}

/// <summary>
/// A failing execution as `harness explore` saves it: the scenario and its options (so a replay
/// rebuilds it), the failure, the command that found it, and Coyote's reproducible trace.
/// </summary>
public sealed record HarnessTrace(string Scenario, ScenarioArgs Args, string Failure, string Command, JsonElement Coyote)
{
    public const string FormatName = "harness-trace/1";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private sealed record Envelope(string Format, string Scenario, ScenarioArgs Args, string Failure, string Command, JsonElement Coyote);

    public string ToJson() => JsonSerializer.Serialize(new Envelope(FormatName, Scenario, Args, Failure, Command, Coyote), Json);

    /// <summary>Writes the trace to path through a temporary file, so a reader never sees half of one.</summary>
    public void Write(string path)
    {
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, ToJson());
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Reads a trace; a file that is not one is a <see cref="TraceFileException"/> naming the file and what is wrong.</summary>
    public static HarnessTrace Read(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception x) when (x is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new TraceFileException($"{path}: cannot read the trace file: {x.Message}", x);
        }
        Envelope? e;
        try { e = JsonSerializer.Deserialize<Envelope>(text, Json); }
        catch (JsonException x)
        {
            throw new TraceFileException($"{path}: not a harness trace (invalid JSON at line {x.LineNumber + 1}: {x.Message})", x);
        }
        if (e is null || e.Format is null)
            throw new TraceFileException($"{path}: not a harness trace (no \"format\": \"{FormatName}\"; a raw Coyote trace does not say which scenario it belongs to)");
        if (e.Format != FormatName) throw new TraceFileException($"{path}: trace format {e.Format}, this harness reads {FormatName}");
        if (string.IsNullOrEmpty(e.Scenario) || e.Args is null || e.Coyote.ValueKind != JsonValueKind.Object)
            throw new TraceFileException($"{path}: a harness trace without its scenario, options or Coyote trace");
        return new HarnessTrace(e.Scenario, e.Args, e.Failure ?? "", e.Command ?? "", e.Coyote);
    }
}
