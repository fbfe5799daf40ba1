using System.Text.Json;
using Harness.Smp;
using Harness.Smp.Cpu;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// Everything `harness run` says on stderr after its arguments are parsed, in one of two forms:
/// text (messages, the results summary, the tables) or, under --stats json, exactly one JSON
/// document whatever happens: a stop reason, a warning, a bad argument or a signal goes into the
/// document instead of a line before it (so `jq` can read every outcome).
/// </summary>
internal sealed class RunReport(bool json)
{
    public bool Json { get; } = json;

    private static readonly JsonSerializerOptions indented = new() { WriteIndented = true };

    /// <summary>The run could not start (or was interrupted before it did): the message, and the exit code.</summary>
    public int Fail(string message, int code = ExitCodes.BadInput)
    {
        if (Json) Console.Error.WriteLine(JsonSerializer.Serialize(new { error = message, exitCode = code, signal = Signals.Received }, indented));
        else Console.Error.WriteLine($"harness: {message}");
        return code;
    }

    public int Final(List<Outcome> outcomes, string? stats, bool compare, bool prof, long dbtOnAt)
    {
        int exit = outcomes.Select(x => ExitCodes.For(x.Result)).FirstOrDefault(c => c != 0);
        var warnings = Warnings(outcomes, dbtOnAt);
        string? hint = Hint(outcomes);
        if (Json)
        {
            var docs = outcomes.Select(StatsDocument).ToList();
            object doc = compare
                ? new { configurations = docs, exitCode = exit, signal = Signals.Received, warnings, hint }
                : new Dictionary<string, object?>(docs[0]) { ["exitCode"] = exit, ["signal"] = Signals.Received, ["warnings"] = warnings, ["hint"] = hint };
            Console.Error.WriteLine(JsonSerializer.Serialize(doc, indented));
            return exit;
        }

        foreach (var x in outcomes)
        {
            string? title = compare ? x.Config : null;
            if (x.Result.Reason != StopReason.Exited)
                Console.Error.WriteLine($"harness: {(title is null ? "" : title + ": ")}machine stopped: {x.Result.Reason}: {StopMessage(x.Result)}");
            if (x.Result.HostException is { } hx) Console.Error.WriteLine(hx);
            x.Tap.PrintSummary(title);
        }
        var measured = outcomes.Where(x => x.Meter is not null).Select(x => (x.Config, x.Meter!)).ToList();
        if (measured.Count > 0 && (compare || prof)) Table3.Print(measured, withStats: stats is not null);
        if (measured.Count > 0) ClientTable.Print(measured);
        if (stats is not null) PrintStats(outcomes, compare);
        foreach (var w in warnings) Console.Error.WriteLine($"harness: warning: {w}");
        if (hint is not null) Console.Error.WriteLine($"harness: hint: {hint}");
        return exit;
    }

    private static string StopMessage(RunResult r) =>
        r.Reason == StopReason.Interrupted && Signals.Received is { } s ? $"received {s}" : r.Message;

    private static List<string> Warnings(List<Outcome> outcomes, long dbtOnAt)
    {
        var w = new List<string>();
        foreach (var x in outcomes)
            if (dbtOnAt > 0 && x.Stats is { SwitchOns: 0 } && x.Result.Reason != StopReason.Interrupted)
                w.Add($"{(outcomes.Count > 1 ? x.Config + ": " : "")}the DBT never switched on: the run ended after vCPU 0 retired " +
                      $"{x.Result.Vcpus[0].GuestTime:N0} instructions, before --dbt-on-at {dbtOnAt:N0}");
        return w;
    }

    /// <summary>A translated run of an image that is not the guest kernel did not exit 0: where the contract it must keep is written.</summary>
    private static string? Hint(List<Outcome> outcomes) =>
        outcomes.Any(x => x.Stats is not null && !x.IsGuestKernel && !(x.Result.Exited && x.Result.ExitStatus == 0) && x.Result.Reason != StopReason.Interrupted
                          && x.Config != "drk")
            ? "under --dbt an image must keep the kernel contract (docs/kernel-contract.md; docs/dbt.md, 'Limits'): images that inspect interrupted " +
              "or faulting RIPs (smp-demo's #BP and fixup checks) see code-cache addresses and fail; run it with --dbt off to compare, " +
              "or with --dbt drk (the DRK-style baseline, whose handlers see native PCs)"
            : null;

    private static void PrintStats(List<Outcome> outcomes, bool compare)
    {
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
            foreach (var c in x.Counters.Where(c => c.Client != Harness.Dbt.Clients.Prof.ClientName)) console.WriteLine($"{c.Client}: {c.Counter}={c.Value}");
            console.WriteLine($"control {x.Control}; stop {r.Reason}; wall {r.Wall.TotalMilliseconds:F1} ms; {r.TotalInstructions:N0} instructions; {r.TotalInstructions / secs / 1e6:F1} guest MIPS");
        }
        console.WriteLine(CompilerLine());
    }

    /// <summary>The block compiler's process-wide counters (every run of this process).</summary>
    internal static string CompilerLine() =>
        $"compiled {Harness.Smp.Compile.BlockCompiler.RegionsCompiled:N0} regions ({Harness.Smp.Compile.BlockCompiler.InstructionsCompiled:N0} instructions, " +
        $"{Harness.Smp.Compile.BlockCompiler.InstructionsFallingBack:N0} through their handlers; {Harness.Smp.Compile.BlockCompiler.RegionsReused:N0} reused) in {Harness.Smp.Compile.BlockCompiler.CompileTime.TotalMilliseconds:F1} ms IL + {Harness.Smp.Compile.BlockCompiler.JitTime.TotalMilliseconds:F1} ms JIT";

    private static Dictionary<string, object?> StatsDocument(Outcome x)
    {
        var r = x.Result;
        var dbt = x.Stats;
        double secs = Math.Max(r.Wall.TotalSeconds, 1e-9);
        var columns = x.Meter?.ClientColumns ?? [];
        return new Dictionary<string, object?>
        {
            ["configuration"] = x.Config,
            // What ended the run: Exited (the guest's status), InstructionLimit, Deadlock, Interrupted,
            // TripleFault, Unsupported, HostError. A script tells a guest exit 124 from the limit by this.
            ["reason"] = r.Reason.ToString(),
            ["exitStatus"] = r.ExitStatus,
            ["message"] = StopMessage(r),
            ["hostException"] = r.HostException?.ToString(),
            ["control"] = x.Control,
            ["wallSeconds"] = r.Wall.TotalSeconds,
            ["totalInstructions"] = r.TotalInstructions,
            ["guestMips"] = r.TotalInstructions / secs / 1e6,
            ["compiler"] = new
            {
                regions = Harness.Smp.Compile.BlockCompiler.RegionsCompiled,
                instructions = Harness.Smp.Compile.BlockCompiler.InstructionsCompiled,
                throughHandlers = Harness.Smp.Compile.BlockCompiler.InstructionsFallingBack,
                reused = Harness.Smp.Compile.BlockCompiler.RegionsReused,
                milliseconds = Harness.Smp.Compile.BlockCompiler.CompileTime.TotalMilliseconds,
            },
            ["dbt"] = dbt is null ? null : new
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
                switchOns = dbt.SwitchOns,
                switchOffs = dbt.SwitchOffs,
                flushes = dbt.Flushes,
            },
            ["clients"] = x.Counters.Select(c => new { client = c.Client, counter = c.Counter, value = c.Value }),
            ["workloads"] = x.Meter?.Rows.Select(w => new
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
                clients = columns.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => w.Clients[p.i]),
            }),
            ["vcpus"] = r.Vcpus.Select(v => new { index = v.Index, started = v.Started, instructions = v.Instructions, guestTime = v.GuestTime, blocksDecoded = v.BlocksDecoded, interrupts = v.Interrupts, exceptions = v.Exceptions }),
        };
    }
}
