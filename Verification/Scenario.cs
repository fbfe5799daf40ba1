using System.Text;
using Harness.Smp;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using Microsoft.Coyote.Specifications;

namespace Harness.Verification;

/// <summary>Invariant checks for scenarios and monitors: a failure is a Coyote assertion failure (a bug with a trace).</summary>
public static class Verify
{
    // Specification.Assert takes a format string: pass the message as an argument so braces in it stay literal.
    public static void That(bool condition, string message) => Specification.Assert(condition, "{0}", message);

    public static void Fail(string message) => Specification.Assert(false, "{0}", message);
}

/// <summary>What a scenario's Build gets: the control the machine must use, and a console to capture.</summary>
public sealed class ScenarioContext
{
    internal ScenarioContext(CoyoteControl control) => Control = control;

    /// <summary>The execution control of this run; pass it in the machine's options (and add monitors to it).</summary>
    public CoyoteControl Control { get; }

    /// <summary>The guest console of this run (pass it in the machine's options to capture it).</summary>
    public MemoryStream Console { get; } = new();

    /// <summary>Machine options wired to this run's control and console.</summary>
    public MachineOptions Options(int vcpus, long maxInstructions, ulong memoryBytes = 32UL << 20, ulong reservedBytes = 1UL << 20,
        string? commandLine = null, MemoryModel memoryModel = MemoryModel.Sc) => new()
    {
        MemoryModel = memoryModel,
        Vcpus = vcpus,
        MemoryBytes = memoryBytes,
        ReservedBytes = reservedBytes,
        MaxInstructions = maxInstructions,
        Control = Control,
        Console = Console,
        CommandLine = commandLine,
    };
}

/// <summary>One finished run of a scenario, for its check.</summary>
public sealed record ScenarioRun(Machine Machine, RunResult Result, string Console)
{
    /// <summary>Verifies the guest exited with `status` (any other stop, e.g. a triple fault, deadlock or instruction limit, fails).</summary>
    public void ExpectExit(int status = 0)
    {
        ExpectExited();
        Verify.That(Result.ExitStatus == status, $"the guest exited with status {Result.ExitStatus}, expected {status}{ConsoleTail}");
    }

    /// <summary>Verifies the guest exited (any status): not a triple fault, deadlock, instruction limit or host error.</summary>
    public void ExpectExited() =>
        Verify.That(Result.Reason == StopReason.Exited, $"the machine stopped with {Result.Reason}, not a guest exit: {Result.Message}{ConsoleTail}");

    private string ConsoleTail => Console.Length == 0 ? "" : "\nconsole (last lines):\n" + string.Join('\n', Console.TrimEnd().Split('\n').TakeLast(8));
}

/// <summary>
/// A scenario: builds a machine on the given control (image, hooks, monitors), runs it from
/// <see cref="Entry"/> (or the image's entry) after the optional <see cref="Setup"/>, and checks
/// the outcome. <see cref="RunOnce"/> is the body of every Coyote iteration, so Build must be
/// deterministic and cheap: read files when the scenario is constructed, not in Build.
/// </summary>
public sealed record Scenario(string Name, Func<ScenarioContext, Machine> Build, Action<ScenarioRun> Check)
{
    /// <summary>How the control turns seams into Coyote decisions (interrupt delay bound, slice, point filter).</summary>
    public CoyoteOptions Control { get; init; } = new();

    /// <summary>The BSP's start; null: the loaded image's entry point.</summary>
    public ulong? Entry { get; init; }

    /// <summary>Adjusts the BSP's state after the boot reset (a stack pointer, registers).</summary>
    public Action<Vcpu>? Setup { get; init; }

    /// <summary>Called with every execution's control and machine right after Build (a report's recorder).</summary>
    public Action<CoyoteControl, Machine>? Observe { get; init; }

    /// <summary>Symbols for reports (the kernel's, or a generated program's), or null.</summary>
    public Harness.Dbt.Kernel.KernelImage? Symbols { get; init; }

    /// <summary>Build restores the machine from a snapshot: every iteration resumes it (<see cref="Machine.Resume"/>) instead of booting.</summary>
    public bool Resumes { get; init; }

    /// <summary>
    /// The scenario's interleavings are at data accesses, so it is only meaningful with
    /// <see cref="Harness.Smp.Control.Seams.Points"/> on; the explorer refuses to run it otherwise.
    /// </summary>
    public bool NeedsSchedulingPoints { get; init; } = true;

    /// <summary>What the scenario's executions showed, summed over an exploration (interrupts delivered, flushes, ...): evidence a clean result was not vacuous.</summary>
    public ScenarioCounters Counters { get; init; } = new();

    /// <summary>What of the interleaving space the executions saw (the generic scenarios record it), or null.</summary>
    public Generic.Coverage? Coverage { get; init; }

    /// <summary>One execution under a fresh <see cref="CoyoteControl"/>: build, run, check.</summary>
    public void RunOnce()
    {
        var control = new CoyoteControl(Control);
        var context = new ScenarioContext(control);
        var machine = Build(context);
        bool finished = false;
        try
        {
            if (!ReferenceEquals(machine.Control, control))
                throw new InvalidOperationException($"scenario {Name}: Build must create the machine on context.Control (use context.Options)");
            Observe?.Invoke(control, machine);
            var result = Resumes ? machine.Resume() : machine.Run(entry: Entry, setup: Setup);
            finished = true;
            // A harness exception on a vCPU thread is a bug in the harness, never a pass.
            if (result.Reason == StopReason.HostError)
                Verify.Fail($"{Name}: {result.Message}\n{result.HostException}");
            Check(new ScenarioRun(machine, result, Encoding.ASCII.GetString(context.Console.ToArray())));
        }
        finally
        {
            // After Coyote ended the execution early, vCPU threads may still be unwinding; freeing
            // the machine's native memory under them would crash the host, so leave it to leak.
            if (finished || control.ThreadsFinished) machine.Dispose();
        }
    }
}

/// <summary>Named totals a scenario adds to from its checks (thread-safe; read after the exploration).</summary>
public sealed class ScenarioCounters
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> totals = new();
    private readonly List<string> order = [];

    public void Add(string name, long value)
    {
        if (totals.TryAdd(name, 0)) lock (order) order.Add(name);
        totals.AddOrUpdate(name, value, (_, v) => v + value);
    }

    /// <summary>The totals in the order they were first added.</summary>
    public IReadOnlyList<(string Name, long Total)> Snapshot()
    {
        lock (order) return order.Select(n => (n, totals[n])).ToList();
    }

    public void Clear()
    {
        lock (order) { order.Clear(); totals.Clear(); }
    }
}
