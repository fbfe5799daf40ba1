using System.CommandLine;
using Harness.Dbt.Clients;
using Harness.Smp;
using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Iced.Intel;

namespace Harness.Cli;

/// <summary>`harness run`: boot an ELF image (default: the guest kernel and its default workloads) and run it to completion.</summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var image = new Argument<FileInfo?>("image") { Description = "ELF64 x86-64 image to boot (default: the bundled guest kernel running its default workload set, built if needed)", Arity = ArgumentArity.ZeroOrOne };
        // An unknown option lands in the image argument ("image not found: .../--bogus"): say what it is.
        image.Validators.Add(r =>
        {
            if (r.Tokens.FirstOrDefault() is { } t && t.Value.StartsWith('-')) r.AddError($"unknown option '{t.Value}'");
        });
        var vcpus = new Option<int>("--vcpus") { Description = "number of vCPUs (1..64)", DefaultValueFactory = _ => 2 };
        var maxInsns = new Option<long>("--max-instructions") { Description = "stop when any vCPU has retired this many instructions (0 = no limit)" };
        var memory = new Option<int>("--memory") { Description = "guest RAM in MiB (18..65536)", DefaultValueFactory = _ => 256 };
        var stats = new Option<string?>("--stats")
        {
            Description = "print per-vCPU statistics to stderr: text (the default when no value is given) or json (then stderr is one JSON document in every outcome, errors included)",
            Arity = ArgumentArity.ZeroOrOne,
            CustomParser = r => r.Tokens.Count == 0 ? "text" : r.Tokens[0].Value,
        };
        stats.AcceptOnlyFromAmong("text", "json");
        var exec = new Option<string>("--exec") { Description = "execution control: free (real threads) or deterministic (one thread, round-robin)", DefaultValueFactory = _ => "free" };
        exec.AcceptOnlyFromAmong("free", "deterministic");
        var cmdline = new Option<string?>("--cmdline") { Description = "command line passed to the guest (boot-info offset 40), e.g. run=selftest" };
        var kernel = new Option<FileInfo?>("--kernel") { Description = "guest kernel image (the same as the image argument)" };
        var workload = new Option<string[]>("--workload")
        {
            Description = "workload(s) the guest kernel runs, in order (repeat or comma-separate); passed as run=<a,b,...> on its command line",
            AllowMultipleArgumentsPerToken = true,
        };
        var dbt = new Option<string>("--dbt") { Description = "run under the kernel DBT: off (native), default (call/ret identity) no-callret (native return addresses, ret through the jumptable) or drk (the DRK-style baseline: no-callret plus every interrupt, exception and syscall through the dispatcher, handlers see native PCs)", DefaultValueFactory = _ => "off" };
        dbt.AcceptOnlyFromAmong(["off", .. Harness.Dbt.DbtOptions.Configurations]);
        var client = new Option<string[]>("--client")
        {
            Description = $"instrumentation client(s) to attach to the DBT (repeat or comma-separate): {string.Join(", ", ClientRegistry.Names)} or one from --rules; prof prints per-workload counts (the paper's Table 3), others their counters",
            AllowMultipleArgumentsPerToken = true,
        };
        var rules = new Option<FileInfo[]>("--rules")
        {
            Description = "an assembly of your own rules and clients (repeatable): each public Rule or Client subclass with a parameterless constructor is registered by its Name (docs/writing-rules.md)",
        };
        var rule = new Option<string[]>("--rule")
        {
            Description = "translate a mnemonic with a named rule, e.g. nop=elide-nop (repeat or comma-separate; names from --rules or the built-in ones)",
            AllowMultipleArgumentsPerToken = true,
        };
        var compare = new Option<bool>("--compare") { Description = "run the image twice, under --dbt default and under --dbt no-callret, and print the per-workload table of both side by side" };
        var quantum = new Option<long>("--quantum") { Description = "instructions per vCPU turn under --exec deterministic", DefaultValueFactory = _ => 1000 };
        var onAt = new Option<long>("--dbt-on-at") { Description = "switch the DBT on when vCPU 0 has retired this many guest instructions (0: at boot, every vCPU starts translated)" };
        var cacheLimit = new Option<int>("--dbt-cache-kib") { Description = $"cap the code cache's block pool at this many KiB (at least {MinCacheKiB}) so it fills and is flushed (switchoff, wipe, switchon); 0: the whole reserved region" };

        var cmd = new Command("run", "boot an image and run it; stdout is the guest console, the exit status is the guest's") { image, kernel, workload, vcpus, maxInsns, memory, stats, exec, quantum, cmdline, dbt, client, rules, rule, compare, onAt, cacheLimit };
        cmd.SetAction((r, ct) => Task.FromResult(Run(new RunSettings(
            r.GetValue(image) ?? r.GetValue(kernel), r.GetValue(image) is not null && r.GetValue(kernel) is not null,
            r.GetValue(workload) ?? [], r.GetValue(vcpus), r.GetValue(maxInsns), r.GetValue(memory), r.GetValue(stats),
            r.GetValue(exec)!, r.GetValue(quantum), r.GetValue(cmdline), r.GetValue(dbt)!, r.GetResult(dbt) is { Implicit: false },
            r.GetValue(client) ?? [], r.GetValue(rules) ?? [], r.GetValue(rule) ?? [], r.GetValue(compare), r.GetValue(onAt), r.GetValue(cacheLimit)), ct)));
        return cmd;
    }

    private sealed record RunSettings(FileInfo? Image, bool TwoImages, string[] Workloads, int Vcpus, long MaxInstructions, int MemoryMiB, string? Stats,
        string Exec, long Quantum, string? CommandLine, string Dbt, bool DbtGiven, string[] Clients, FileInfo[] Rules, string[] RuleArgs,
        bool Compare, long DbtOnAt, int DbtCacheKiB);

    // The machine reserves the top 16 MiB and needs 2 MiB below it (Machine's constructor checks it).
    private const int MinMemoryMiB = 18, MaxMemoryMiB = 64 * 1024;

    // The largest block (256 instructions) and the shadow IDT's entry paths must fit the pool at once;
    // below this the first flush cannot make room (a run with more is still too small if its working
    // set does not fit: that ends the run with HostError, docs/cli.md).
    private const int MinCacheKiB = 8;

    private static int Run(RunSettings o, CancellationToken ct)
    {
        var report = new RunReport(json: o.Stats == "json");
        var (image, twoImages, workloads, vcpus, maxInsns, memoryMiB, stats, exec, quantum, commandLine, dbtMode, dbtGiven, clientArgs, _, _, compare, _, _) = o;
        var names = Split(workloads);
        if (names.Count > 0)
            commandLine = (commandLine is null ? "" : commandLine + " ") + "run=" + string.Join(',', names);
        string? badName = names.FirstOrDefault(n => !n.All(ch => char.IsAsciiLetterOrDigit(ch) || ch == '_' || ch == '-'));
        string? error = twoImages ? "give the image either as the argument or with --kernel, not both"
            : badName is not null ? $"--workload: '{badName}' is not a workload name (letters, digits, _ and -)"
            : vcpus < 1 || vcpus > BootLayout.MaxCpus ? $"--vcpus must be between 1 and {BootLayout.MaxCpus} (got {vcpus})"
            : memoryMiB < MinMemoryMiB || memoryMiB > MaxMemoryMiB ? $"--memory must be between {MinMemoryMiB} and {MaxMemoryMiB} (MiB; the top 16 MiB are reserved) (got {memoryMiB})"
            : maxInsns < 0 ? $"--max-instructions must not be negative (got {maxInsns})"
            : quantum < 1 ? $"--quantum must be positive (got {quantum})"
            : o.DbtOnAt < 0 ? $"--dbt-on-at must not be negative (got {o.DbtOnAt})"
            : o.DbtCacheKiB < 0 ? $"--dbt-cache-kib must not be negative (got {o.DbtCacheKiB})"
            : o.DbtCacheKiB is > 0 and < MinCacheKiB ? $"--dbt-cache-kib {o.DbtCacheKiB} is too small: the pool must hold the largest block and the interrupt entry paths at once (at least {MinCacheKiB} KiB; 0: the whole reserved region)"
            : (o.DbtOnAt > 0 || o.DbtCacheKiB > 0 || o.RuleArgs.Length > 0) && dbtMode == "off" && !compare ? "--dbt-on-at, --dbt-cache-kib and --rule need --dbt default or no-callret (or --compare)"
            : commandLine is { } cl && (cl.Length > BootLayout.CommandLineMax || cl.Any(ch => ch is < ' ' or > '~'))
                ? $"--cmdline must be printable ASCII of at most {BootLayout.CommandLineMax} characters"
            : compare && dbtGiven && dbtMode == "off" ? "--compare runs the DBT configurations default and no-callret: it cannot be combined with --dbt off"
            : image is not null && Directory.Exists(image.FullName) ? $"{image.FullName} is a directory, not an ELF image"
            : image is { Exists: false } ? $"image not found: {image.FullName}"
            : null;
        if (error is not null) return report.Fail(error);

        // A translator author's rules and clients first: --client and --rule may name them.
        foreach (var file in o.Rules)
        {
            try { Harness.Dbt.Translate.RulePlugins.Load(file); }
            catch (Harness.Dbt.Translate.RulePlugins.PluginException e) { return report.Fail(e.Message); }
        }
        var clients = Split(clientArgs);
        string? badClient = clients.FirstOrDefault(c => !ClientRegistry.IsRegistered(c));
        string? twiceClient = clients.GroupBy(c => c).FirstOrDefault(g => g.Count() > 1)?.Key;
        error = badClient is not null ? $"--client: no client named '{badClient}' (available: {string.Join(", ", ClientRegistry.Names)}{(o.Rules.Length == 0 ? "; load your own with --rules FILE.dll" : "")})"
            : twiceClient is not null ? $"--client: '{twiceClient}' is given more than once"
            : clients.Count > 0 && !compare && dbtMode == "off" ? "--client instruments translated code: give --dbt default or --dbt no-callret (or --compare)"
            : null;
        if (error is not null) return report.Fail(error);
        if (Harness.Dbt.Translate.RuleOverrides.Parse(Split(o.RuleArgs), out error) is not { } overrides) return report.Fail(error!);

        string path;
        try { path = image?.FullName ?? DefaultImage.Ensure(ct, report.Json ? null : line => Console.Error.WriteLine($"harness: {line}")); }
        catch (DefaultImage.BuildException e) { return report.Fail(e.Message); }
        catch (OperationCanceledException) { return report.Fail($"interrupted by {Signals.Received ?? "cancellation"} while building the guest kernel", Signals.ExitCode); }

        // --compare: the same image, command line and machine, once per configuration, one after the other.
        string[] configs = compare ? ["default", "no-callret"] : [dbtMode];
        var outcomes = new List<Outcome>();
        foreach (var config in configs)
        {
            var (code, outcome, why) = RunOnce(o with { Dbt = config, CommandLine = commandLine }, path, names, clients, overrides, ct);
            if (outcome is null) return report.Fail(why!, code);
            outcomes.Add(outcome);
            if (outcome.Result.Reason == StopReason.Interrupted) break;
        }
        return report.Final(outcomes, stats, compare, clients.Contains(Prof.ClientName), o.DbtOnAt);
    }

    private static List<string> Split(string[] values) =>
        values.SelectMany(w => w.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();

    /// <summary>--rule MNEMONIC=NAME, checked against Iced's mnemonics and the rule registry.</summary>
    /// <summary>Boots and runs one configuration; a null outcome means the run could not start (the code and message say why).</summary>
    private static (int Code, Outcome? Outcome, string? Why) RunOnce(RunSettings o, string path, List<string> workloads, List<string> clients,
        Dictionary<Mnemonic, string> overrides, CancellationToken ct)
    {
        ExecutionControl control = o.Exec == "deterministic" ? new Deterministic(o.Quantum) : new FreeRunning();
        var stdout = new ConsoleTap(Console.OpenStandardOutput());
        Harness.Smp.Machine created;
        try
        {
            created = new Harness.Smp.Machine(new MachineOptions
            {
                Vcpus = o.Vcpus,
                MemoryBytes = (ulong)o.MemoryMiB << 20,
                MaxInstructions = o.MaxInstructions,
                Control = control,
                Console = stdout,
                CommandLine = o.CommandLine,
            });
        }
        catch (OutOfMemoryException) { return (ExitCodes.BadInput, null, $"cannot allocate {o.MemoryMiB} MiB of guest RAM on this host (--memory)"); }
        catch (ArgumentOutOfRangeException e) { return (ExitCodes.BadInput, null, $"bad machine configuration: {e.Message}"); }
        using var machine = created;
        try { machine.LoadElf(path); }
        catch (ImageException e) { return (ExitCodes.BadInput, null, $"bad image: {e.Message}"); }
        var kernelImage = TryKernelImage(path);
        if (workloads.Count > 0 && kernelImage is not null && KernelPrograms.Read(machine, kernelImage) is { } bundled)
        {
            if (workloads.FirstOrDefault(w => !bundled.Contains(w)) is { } unknown)
                return (ExitCodes.BadInput, null, $"--workload: no workload named '{unknown}' in {Path.GetFileName(path)} (available: {string.Join(", ", bundled)})");
        }

        Harness.Dbt.KernelDbt? translator = null;
        WorkloadMeter? meter = null;
        if (o.Dbt != "off")
        {
            if (kernelImage is null) return (ExitCodes.BadInput, null, $"--dbt: {path}: cannot read its symbol table");
            try
            {
                translator = Harness.Dbt.KernelDbt.Attach(machine, Harness.Dbt.DbtOptions.Named(o.Dbt) with
                {
                    Kernel = kernelImage,
                    Clients = clients,
                    RuleOverrides = overrides,
                    SwitchOnAt = o.DbtOnAt,
                    MainPoolLimit = o.DbtCacheKiB > 0 ? (ulong)o.DbtCacheKiB * 1024 : null,
                });
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException) { return (ExitCodes.BadInput, null, $"--dbt: {e.Message}"); }
            meter = new WorkloadMeter(translator);
            stdout.WorkloadEnded = meter.WorkloadEnded;
            // The first user-mode code marks the end of boot: the first workload's program starts.
            machine.Attach(new HookAgent { OnBlockDecoded = (v, va, pa) => { if ((long)va >= 0) meter.UserModeStarted(); } });
        }

        // A signal (Signals: installed before anything else) stops the machine cleanly; one that came
        // before this point stops it at once, and the report below is printed either way.
        RunResult result;
        meter?.Start();
        result = machine.Run(ct);
        meter?.Finish();
        stdout.Flush();
        var counters = translator?.ClientCounters.Select(c => new ClientCount(c.Client, c.Counter.Name, c.Counter.Read())).ToList() ?? [];
        return (0, new Outcome(o.Dbt, result, stdout, translator?.Stats, meter, control.Name, counters, IsGuestKernel: kernelImage?.Symbol("thread_list") is not null), null);
    }

    private static Harness.Dbt.Kernel.KernelImage? TryKernelImage(string path)
    {
        try { return Harness.Dbt.Kernel.KernelImage.FromElf(File.ReadAllBytes(path), path); }
        catch (FormatException) { return null; }
    }
}

/// <summary>What one configuration's run left behind once its machine is gone.</summary>
internal sealed record Outcome(string Config, RunResult Result, ConsoleTap Tap, Harness.Dbt.DbtStats? Stats, WorkloadMeter? Meter, string Control,
    IReadOnlyList<ClientCount> Counters, bool IsGuestKernel);

internal sealed record ClientCount(string Client, string Counter, long Value);

/// <summary>The bundled programs of the guest kernel (its `programs` table, guest/kernel/gen-programs.sh), read from the loaded image.</summary>
internal static class KernelPrograms
{
    private const int EntryBytes = 32; // struct program { name, start, end, in_default }

    public static IReadOnlyList<string>? Read(Harness.Smp.Machine m, Harness.Dbt.Kernel.KernelImage k)
    {
        if (k.Symbol("programs") is not ulong table || k.Symbol("program_count") is not ulong countAt || m.Image is not { } img) return null;
        ulong? Phys(ulong va) => img.Segments.FirstOrDefault(s => va - s.VirtAddr < s.MemSize) is { } s ? s.PhysAddr + (va - s.VirtAddr) : null;
        if (Phys(countAt) is not ulong c) return null;
        ulong n = m.Memory.ReadU64(c);
        if (n > 4096) return null;
        var names = new List<string>();
        for (ulong i = 0; i < n; i++)
        {
            if (Phys(table + i * EntryBytes) is not ulong e || Phys(m.Memory.ReadU64(e)) is not ulong s) return null;
            var sb = new System.Text.StringBuilder();
            for (ulong j = 0; j < 64 && m.Memory.InRam(s + j); j++)
            {
                byte b = m.Memory.Span(s + j, 1)[0];
                if (b == 0) break;
                sb.Append((char)b);
            }
            names.Add(sb.ToString());
        }
        return names;
    }
}

/// <summary>Process exit codes: the guest's status when it exits, fixed codes for every other stop (docs/cli.md).</summary>
internal static class ExitCodes
{
    public const int BadInput = 2, InstructionLimit = 124, MachineFault = 125, Deadlock = 126;

    public static int For(RunResult r) => r.Reason switch
    {
        // The guest's 32-bit status maps to the low 8 bits; a non-zero status never maps to 0.
        StopReason.Exited => r.ExitStatus == 0 ? 0 : (r.ExitStatus & 0xFF) == 0 ? 1 : r.ExitStatus & 0xFF,
        StopReason.InstructionLimit => InstructionLimit,
        StopReason.Deadlock => Deadlock,
        // 128 + the signal: 130 SIGINT (Ctrl-C), 143 SIGTERM, 129 SIGHUP.
        StopReason.Interrupted => Signals.ExitCode,
        _ => MachineFault,
    };
}
