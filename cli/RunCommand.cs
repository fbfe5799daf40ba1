using System.CommandLine;
using System.Text.Json;
using Harness.Dbt.Clients;
using Harness.Machine;
using Harness.Machine.Boot;
using Harness.Machine.Control;
using Harness.Machine.Cpu;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>`harness run`: boot an ELF image (default: the guest kernel and its default workloads) and run it to completion.</summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var image = new Argument<FileInfo?>("image") { Description = "ELF64 x86-64 image to boot (default: the bundled guest kernel running its default workload set, built if needed)", Arity = ArgumentArity.ZeroOrOne };
        var vcpus = new Option<int>("--vcpus") { Description = "number of vCPUs (1..64)", DefaultValueFactory = _ => 2 };
        var maxInsns = new Option<long>("--max-instructions") { Description = "stop when any vCPU has retired this many instructions (0 = no limit)" };
        var memory = new Option<int>("--memory") { Description = "guest RAM in MiB (18..65536)", DefaultValueFactory = _ => 256 };
        var stats = new Option<string?>("--stats")
        {
            Description = "print per-vCPU statistics to stderr: text (the default when no value is given) or json (under --dbt also translation statistics and host time, per workload with --client prof or --compare)",
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
        var dbt = new Option<string>("--dbt") { Description = "run under the kernel DBT: off (native), default (call/ret identity) or no-callret (native return addresses, ret through the jumptable)", DefaultValueFactory = _ => "off" };
        dbt.AcceptOnlyFromAmong("off", "default", "no-callret");
        var client = new Option<string[]>("--client")
        {
            Description = $"instrumentation client(s) to attach to the DBT (repeat or comma-separate): {string.Join(", ", ClientRegistry.Names)}; prof prints per-workload counts (the paper's Table 3) after the run",
            AllowMultipleArgumentsPerToken = true,
        };
        var compare = new Option<bool>("--compare") { Description = "run the image twice, under --dbt default and under --dbt no-callret, and print the per-workload table of both side by side" };
        var quantum = new Option<long>("--quantum") { Description = "instructions per vCPU turn under --exec deterministic", DefaultValueFactory = _ => 1000 };
        var onAt = new Option<long>("--dbt-on-at") { Description = "switch the DBT on when vCPU 0 has retired this many guest instructions (0: at boot, every vCPU starts translated)" };
        var cacheLimit = new Option<int>("--dbt-cache-kib") { Description = "cap the code cache's block pool at this many KiB so it fills and is flushed (switchoff, wipe, switchon); 0: the whole reserved region" };

        var cmd = new Command("run", "boot an image and run it; stdout is the guest console, the exit status is the guest's") { image, kernel, workload, vcpus, maxInsns, memory, stats, exec, quantum, cmdline, dbt, client, compare, onAt, cacheLimit };
        cmd.SetAction((r, ct) => Task.FromResult(Run(new RunSettings(
            r.GetValue(image) ?? r.GetValue(kernel), r.GetValue(image) is not null && r.GetValue(kernel) is not null,
            r.GetValue(workload) ?? [], r.GetValue(vcpus), r.GetValue(maxInsns), r.GetValue(memory), r.GetValue(stats),
            r.GetValue(exec)!, r.GetValue(quantum), r.GetValue(cmdline), r.GetValue(dbt)!, r.GetResult(dbt) is { Implicit: false },
            r.GetValue(client) ?? [], r.GetValue(compare), r.GetValue(onAt), r.GetValue(cacheLimit)), ct)));
        return cmd;
    }

    private sealed record RunSettings(FileInfo? Image, bool TwoImages, string[] Workloads, int Vcpus, long MaxInstructions, int MemoryMiB, string? Stats,
        string Exec, long Quantum, string? CommandLine, string Dbt, bool DbtGiven, string[] Clients, bool Compare, long DbtOnAt, int DbtCacheKiB);

    // The machine reserves the top 16 MiB and needs 2 MiB below it (Machine's constructor checks it).
    private const int MinMemoryMiB = 18, MaxMemoryMiB = 64 * 1024;

    /// <summary>What one configuration's run left behind once its machine is gone.</summary>
    private sealed record Outcome(string Config, RunResult Result, ConsoleTap Tap, Harness.Dbt.DbtStats? Stats, WorkloadMeter? Meter, string Control);

    private static int Run(RunSettings o, CancellationToken ct)
    {
        var (image, twoImages, workloads, vcpus, maxInsns, memoryMiB, stats, exec, quantum, commandLine, dbtMode, dbtGiven, clientArgs, compare, _, _) = o;
        var names = workloads.SelectMany(w => w.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
        if (names.Count > 0)
            commandLine = (commandLine is null ? "" : commandLine + " ") + "run=" + string.Join(',', names);
        string? badName = names.FirstOrDefault(n => !n.All(ch => char.IsAsciiLetterOrDigit(ch) || ch == '_' || ch == '-'));
        var clients = clientArgs.SelectMany(c => c.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
        string? badClient = clients.FirstOrDefault(c => !ClientRegistry.IsRegistered(c));
        string? twiceClient = clients.GroupBy(c => c).FirstOrDefault(g => g.Count() > 1)?.Key;
        string? error = twoImages ? "give the image either as the argument or with --kernel, not both"
            : badName is not null ? $"--workload: '{badName}' is not a workload name (letters, digits, _ and -)"
            : vcpus < 1 || vcpus > BootLayout.MaxCpus ? $"--vcpus must be between 1 and {BootLayout.MaxCpus} (got {vcpus})"
            : memoryMiB < MinMemoryMiB || memoryMiB > MaxMemoryMiB ? $"--memory must be between {MinMemoryMiB} and {MaxMemoryMiB} (MiB; the top 16 MiB are reserved) (got {memoryMiB})"
            : maxInsns < 0 ? $"--max-instructions must not be negative (got {maxInsns})"
            : quantum < 1 ? $"--quantum must be positive (got {quantum})"
            : o.DbtOnAt < 0 ? $"--dbt-on-at must not be negative (got {o.DbtOnAt})"
            : o.DbtCacheKiB < 0 ? $"--dbt-cache-kib must not be negative (got {o.DbtCacheKiB})"
            : (o.DbtOnAt > 0 || o.DbtCacheKiB > 0) && dbtMode == "off" && !compare ? "--dbt-on-at and --dbt-cache-kib need --dbt default or no-callret"
            : commandLine is { } cl && (cl.Length > BootLayout.CommandLineMax || cl.Any(ch => ch is < ' ' or > '~'))
                ? $"--cmdline must be printable ASCII of at most {BootLayout.CommandLineMax} characters"
            : badClient is not null ? $"--client: no client named '{badClient}' (available: {string.Join(", ", ClientRegistry.Names)})"
            : twiceClient is not null ? $"--client: '{twiceClient}' is given more than once"
            : compare && dbtGiven && dbtMode == "off" ? "--compare runs the DBT configurations default and no-callret: it cannot be combined with --dbt off"
            : clients.Count > 0 && !compare && dbtMode == "off" ? "--client instruments translated code: give --dbt default or --dbt no-callret (or --compare)"
            : image is { Exists: false } ? $"image not found: {image.FullName}"
            : null;
        if (error is not null) { Console.Error.WriteLine($"harness: {error}"); return ExitCodes.BadInput; }
        string path;
        try { path = image?.FullName ?? DefaultImage.Ensure(); }
        catch (DefaultImage.BuildException e) { Console.Error.WriteLine($"harness: {e.Message}"); return ExitCodes.BadInput; }

        // --compare: the same image, command line and machine, once per configuration, one after the other.
        string[] configs = compare ? ["default", "no-callret"] : [dbtMode];
        var outcomes = new List<Outcome>();
        foreach (var config in configs)
        {
            var (code, outcome) = RunOnce(o with { Dbt = config, CommandLine = commandLine }, path, clients, ct);
            if (outcome is null) return code;
            outcomes.Add(outcome);
            if (outcome.Result.Reason == StopReason.Interrupted) break;
        }

        foreach (var x in outcomes)
        {
            string? title = compare ? x.Config : null;
            if (x.Result.Reason != StopReason.Exited) Console.Error.WriteLine($"harness: {(title is null ? "" : title + ": ")}machine stopped: {x.Result.Reason}: {x.Result.Message}");
            if (x.Result.HostException is { } hx) Console.Error.WriteLine(hx);
            if (stats != "json") x.Tap.PrintSummary(title); // with --stats json, stderr is only the JSON document
        }
        var measured = outcomes.Where(x => x.Meter is not null).ToList();
        if (stats != "json" && measured.Count > 0 && (compare || clients.Contains(Prof.ClientName)))
            Table3.Print(measured.Select(x => (x.Config, x.Meter!)).ToList(), withStats: stats is not null);
        if (stats is not null) PrintStats(outcomes, stats, compare);
        return outcomes.Select(x => ExitCodes.For(x.Result)).FirstOrDefault(c => c != 0);
    }

    /// <summary>Boots and runs one configuration; a null outcome means the run could not start (the code says why).</summary>
    private static (int Code, Outcome? Outcome) RunOnce(RunSettings o, string path, List<string> clients, CancellationToken ct)
    {
        ExecutionControl control = o.Exec == "deterministic" ? new Deterministic(o.Quantum) : new FreeRunning();
        var stdout = new ConsoleTap(Console.OpenStandardOutput());
        Harness.Machine.Machine created;
        try
        {
            created = new Harness.Machine.Machine(new MachineOptions
            {
                Vcpus = o.Vcpus,
                MemoryBytes = (ulong)o.MemoryMiB << 20,
                MaxInstructions = o.MaxInstructions,
                Control = control,
                Console = stdout,
                CommandLine = o.CommandLine,
            });
        }
        catch (OutOfMemoryException)
        {
            Console.Error.WriteLine($"harness: cannot allocate {o.MemoryMiB} MiB of guest RAM on this host (--memory)");
            return (ExitCodes.BadInput, null);
        }
        catch (ArgumentOutOfRangeException e)
        {
            Console.Error.WriteLine($"harness: bad machine configuration: {e.Message}");
            return (ExitCodes.BadInput, null);
        }
        using var machine = created;
        try { machine.LoadElf(path); }
        catch (ImageException e) { Console.Error.WriteLine($"harness: bad image: {e.Message}"); return (ExitCodes.BadInput, null); }

        Harness.Dbt.Dbt? translator = null;
        WorkloadMeter? meter = null;
        if (o.Dbt != "off")
        {
            try
            {
                translator = Harness.Dbt.Dbt.Attach(machine, new Harness.Dbt.DbtOptions
                {
                    CallRet = o.Dbt == "default",
                    Kernel = Harness.Dbt.Kernel.KernelImage.FromElf(File.ReadAllBytes(path), path),
                    Clients = clients,
                    SwitchOnAt = o.DbtOnAt,
                    MainPoolLimit = o.DbtCacheKiB > 0 ? (ulong)o.DbtCacheKiB * 1024 : null,
                });
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException) { Console.Error.WriteLine($"harness: --dbt: {e.Message}"); return (ExitCodes.BadInput, null); }
            meter = new WorkloadMeter(translator);
            stdout.WorkloadEnded = meter.WorkloadEnded;
            // The first user-mode code marks the end of boot: the first workload's program starts.
            var previous = machine.BlockDecoded;
            machine.BlockDecoded = (v, va, pa) =>
            {
                previous?.Invoke(v, va, pa);
                if ((long)va >= 0) meter.UserModeStarted();
            };
        }

        // Ctrl-C: stop the machine cleanly (output flushed, stats printed) instead of killing the process.
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        RunResult result;
        meter?.Start();
        try { result = machine.Run(cts.Token); }
        finally { Console.CancelKeyPress -= onCancel; }
        meter?.Finish();
        stdout.Flush();
        return (0, new Outcome(o.Dbt, result, stdout, translator?.Stats, meter, control.Name));
    }

    private static void PrintStats(List<Outcome> outcomes, string format, bool compare)
    {
        if (format == "json")
        {
            var docs = outcomes.Select(StatsDocument).ToList();
            object doc = compare ? new { configurations = docs } : docs[0];
            Console.Error.WriteLine(JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        foreach (var x in outcomes)
        {
            var r = x.Result;
            double secs = Math.Max(r.Wall.TotalSeconds, 1e-9);
            var t = new Table().AddColumns("vCPU", "instructions", "guest time", "blocks decoded", "interrupts", "exceptions");
            if (compare) t.Title = new TableTitle(x.Config);
            foreach (var v in r.Vcpus.Where(v => v.Started))
                t.AddRow(v.Index.ToString(), v.Instructions.ToString("N0"), v.GuestTime.ToString("N0"), v.BlocksDecoded.ToString("N0"), v.Interrupts.ToString("N0"), v.Exceptions.ToString("N0"));
            console.Write(t);
            if (x.Stats is not null) console.WriteLine(x.Stats.ToString());
            if (x.Meter?.Prof is { } p) console.WriteLine(p.ToString());
            console.WriteLine($"control {x.Control}; stop {r.Reason}; wall {r.Wall.TotalMilliseconds:F1} ms; {r.TotalInstructions:N0} instructions; {r.TotalInstructions / secs / 1e6:F1} guest MIPS");
        }
    }

    private static object StatsDocument(Outcome x)
    {
        var r = x.Result;
        var dbt = x.Stats;
        double secs = Math.Max(r.Wall.TotalSeconds, 1e-9);
        return new
        {
            configuration = x.Config,
            reason = r.Reason.ToString(),
            exitStatus = r.ExitStatus,
            control = x.Control,
            wallSeconds = r.Wall.TotalSeconds,
            totalInstructions = r.TotalInstructions,
            guestMips = r.TotalInstructions / secs / 1e6,
            dbt = dbt is null ? null : new
            {
                blocks = dbt.BlocksTranslated,
                nativeInstructions = dbt.NativeInstructions,
                nativeBytes = dbt.NativeBytes,
                cacheBytes = dbt.CacheBytes,
                expansion = dbt.ExpansionFactor,
                edgeStubs = dbt.EdgeStubs,
                chainedEdges = dbt.ChainedEdges,
                dispatcherEntries = dbt.DispatcherEntries,
                indirectDispatches = dbt.IndirectDispatches,
            },
            workloads = x.Meter?.Rows.Select(w => new
            {
                name = w.Name,
                guestInstructions = w.HasProf ? w.Counts.Instructions : (long?)null,
                indirectBranches = w.HasProf ? w.Counts.IndirectBranches : (long?)null,
                level1Hits = w.HasProf ? w.Counts.Level1Hits : (long?)null,
                level2Hits = w.HasProf ? w.Counts.Level2Hits : (long?)null,
                jumptableMisses = w.Counts.JumpTableMisses,
                dispatcherEntries = w.Counts.DispatcherEntries,
                blocks = w.Blocks,
                hostMilliseconds = w.Host.TotalMilliseconds,
            }),
            vcpus = r.Vcpus.Select(v => new { index = v.Index, started = v.Started, instructions = v.Instructions, guestTime = v.GuestTime, blocksDecoded = v.BlocksDecoded, interrupts = v.Interrupts, exceptions = v.Exceptions }),
        };
    }
}

/// <summary>Process exit codes: the guest's status when it exits, fixed codes for every other stop (docs/cli.md).</summary>
internal static class ExitCodes
{
    public const int BadInput = 2, InstructionLimit = 124, MachineFault = 125, Deadlock = 126, Interrupted = 130;

    public static int For(RunResult r) => r.Reason switch
    {
        // The guest's 32-bit status maps to the low 8 bits; a non-zero status never maps to 0.
        StopReason.Exited => r.ExitStatus == 0 ? 0 : (r.ExitStatus & 0xFF) == 0 ? 1 : r.ExitStatus & 0xFF,
        StopReason.InstructionLimit => InstructionLimit,
        StopReason.Deadlock => Deadlock,
        StopReason.Interrupted => Interrupted,
        _ => MachineFault,
    };
}
