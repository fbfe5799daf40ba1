using Harness.Smp.Boot;
using Harness.Dbt;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Verification.Guests;
using Iced.Intel;

namespace Harness.Verification.Scenarios;

/// <summary>What one run of a DBT guest showed, in the terms both guests share.</summary>
/// <param name="TicksInWindow">Ticks delivered inside the guest's window (its outcome says which).</param>
public abstract record DbtGuestOutcome(string? Bug, string? Problem, RunResult Result, int Ticks, int TicksInWindow)
{
    public bool Clean => Bug is null && Problem is null;
}

/// <summary>What one run of <see cref="JumpTableRaceGuest"/> showed.</summary>
/// <param name="Bug">The race's failure (a handler target ran from the main loop), or null.</param>
/// <param name="Problem">Any other way the run did not pass (a stop other than exit 0, wrong counts), or null.</param>
/// <param name="Ticks">Timer ticks delivered (all vCPUs).</param>
/// <param name="TicksInWindow">Ticks delivered between a lookup's hit test and its read of tx (each one is the bug).</param>
/// <param name="TicksAtLookupEnd">
/// Ticks delivered at a lookup's closing <c>ret</c>, right after its <c>popfq</c>: under the correct
/// rule, ticks that arrived while the lookup ran with interrupts off (cli) and were held back until
/// it was done, or exactly at that boundary. Shows that a clean run was exercised, not vacuous.
/// </param>
/// <summary>What one run of <see cref="ChainingPatchGuest"/> showed.</summary>
/// <param name="Chained">Edges chained (each one a patch another vCPU might have run half-written).</param>
/// <param name="StaleEntries">
/// Dispatcher entries through an edge another vCPU had already chained: a vCPU ran the branch while
/// (or just before) it was patched. Shows that a clean run had the vCPUs meet at a patch, not vacuous.
/// </param>
public sealed record ChainingPatchOutcome(string? Bug, string? Problem, RunResult Result, long Chained, long StaleEntries)
    : DbtGuestOutcome(Bug, Problem, Result, Ticks: 0, TicksInWindow: 0);

public sealed record JumpTableRaceOutcome(string? Bug, string? Problem, RunResult Result, int Ticks, int TicksInWindow, int TicksAtLookupEnd)
    : DbtGuestOutcome(Bug, Problem, Result, Ticks, TicksInWindow);

/// <summary>
/// Scenarios on the DBT (<see cref="KernelDbt"/> attached to a bare machine running a ring-0
/// guest), in a planted-bug and a correct form, with the same contract as
/// <see cref="MachineScenarios"/>: the planted bug is found within a stated budget and replays from
/// its trace, the correct form passes that budget clean (tests/Verification.Tests/DbtScenarioTests.cs,
/// numbers in docs/verification.md). None of them flushes the cache or switches the DBT off: the
/// guests have no kernel thread list for switchoff to walk (the generic scenarios flush under Coyote).
/// </summary>
public static class DbtScenarios
{
    /// <summary>Code cache and memory for the jumptable guest (the default main pool: no flush).</summary>
    private const ulong MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20;
    private const long MaxInstructions = 2_000_000;

    /// <summary>
    /// The paper's "most subtle issue" (the smoke test of the Verification seam on the DBT): two
    /// vCPUs, timer interrupts on, each main loop calling A_t through a register while its timer
    /// handler's first-time call to C_t (same level-1 slot) makes the dispatcher replace A_t's
    /// level-1 entry (<see cref="JumpTableRaceGuest"/>). Planted bug
    /// (<see cref="DbtOptions.PlantedLookupWithInterrupts"/>): the inline lookup runs with IF=1, so
    /// a tick between its hit test (<c>cmp rax, [rbx]</c>) and its read of tx (<c>push qword [rbx+8]</c> in the register form)
    /// sends the main loop to C_t: two instruction boundaries of the ~30-instruction translated loop.
    /// Correct form: the default rule (pushfq; cli ... popfq). Coyote chooses each tick's delay from
    /// [0, delayBound) instructions after its deadline; the vCPUs share nothing but their done
    /// flags, so only those accesses are scheduling points.
    /// </summary>
    /// <param name="observe">Called with every execution's outcome before its check (measurements).</param>
    public static Scenario JumpTableLookup(bool lookupWithInterrupts, int ticks = 8, uint period = 300, int delayBound = 64, int vcpus = 2,
        Action<JumpTableRaceOutcome>? observe = null)
    {
        var guest = new JumpTableRaceGuest(vcpus, ticks, period);
        return GuestScenario(lookupWithInterrupts ? "jumptable-lookup-with-interrupts" : "jumptable-lookup-cli", vcpus, guest.Load,
            new DbtOptions { PlantedLookupWithInterrupts = lookupWithInterrupts }, delayBound, (m, dbt, r) => Evaluate(guest, m, dbt, r), observe);
    }

    /// <summary>
    /// One run of the jumptable guest outside Coyote (a plain free-running or deterministic run),
    /// for comparison: translated with options, or natively when options is null.
    /// </summary>
    public static JumpTableRaceOutcome RunJumpTableGuest(ExecutionControl control, DbtOptions? options, int ticks = 8, uint period = 300, int vcpus = 2)
    {
        var guest = new JumpTableRaceGuest(vcpus, ticks, period);
        return RunGuest(control, options, vcpus, guest.Load, (m, dbt, r) => Evaluate(guest, m, dbt, r));
    }

    /// <summary>
    /// A chaining patch observed half-written (btkernel-notes: "a chaining patch that another CPU can
    /// observe half-written"): two vCPUs run the same loop (<see cref="ChainingPatchGuest"/>), and the
    /// first to take each direct branch patches its rel32 while the other may be about to run it.
    /// Planted bug (<see cref="DbtOptions.PlantedTornChainingPatch"/>): the patch is four one-byte
    /// stores, a scheduling point between each; correct form: one aligned 4-byte store, with a
    /// scheduling point just before it. The dispatcher's points are the interleavings that matter;
    /// data accesses are points only for the done flags.
    /// </summary>
    /// <param name="mainPoolLimit">A code cache too small for the guest (a flush then fails: the guest has no kernel thread list for switchoff).</param>
    public static Scenario ChainingPatch(bool torn, int iterations = 20, int vcpus = 2, Action<ChainingPatchOutcome>? observe = null, ulong? mainPoolLimit = null)
    {
        var guest = new ChainingPatchGuest(vcpus, iterations);
        return GuestScenario(torn ? "chaining-patch-torn" : "chaining-patch-atomic", vcpus, guest.Load,
            new DbtOptions { PlantedTornChainingPatch = torn, MainPoolLimit = mainPoolLimit }, delayBound: 1, (m, dbt, r) => Evaluate(guest, m, dbt, r), observe,
            dispatcherPoints: true, maxInstructions: ChainingMaxInstructions);
    }

    /// <summary>One run of the chaining guest outside Coyote: translated with options, or natively when options is null.</summary>
    public static ChainingPatchOutcome RunChainingGuest(ExecutionControl control, DbtOptions? options, int iterations = 20, int vcpus = 2)
    {
        var guest = new ChainingPatchGuest(vcpus, iterations);
        return RunGuest(control, options, vcpus, guest.Load, (m, dbt, r) => Evaluate(guest, m, dbt, r), ChainingMaxInstructions);
    }

    // A correct run takes about 150 instructions per vCPU; one sent astray by a torn patch often
    // spins (the BSP waiting for an AP that went wrong), so the limit ends it early.
    private const long ChainingMaxInstructions = 100_000;

    /// <summary>How every failure of the chaining guest begins.</summary>
    public const string Astray = "a vCPU went astray in the patched loop";

    private static ChainingPatchOutcome Evaluate(ChainingPatchGuest g, Machine m, KernelDbt? dbt, RunResult r)
    {
        var st = dbt?.Stats;
        long chained = st?.ChainedEdges ?? 0, stale = st?.StaleEdgeEntries ?? 0;
        ChainingPatchOutcome Outcome(string? bug) => new(bug, null, r, chained, stale);
        var counts = new (ulong Iterations, ulong Calls)[g.Vcpus];
        for (int cpu = 0; cpu < g.Vcpus; cpu++)
        {
            ulong pc = ChainingPatchGuest.PerCpu(cpu) - Harness.Smp.Boot.BootLayout.KernelAlias;
            counts[cpu] = (m.Memory.ReadU64(pc + ChainingPatchGuest.OffIterations), m.Memory.ReadU64(pc + ChainingPatchGuest.OffCalls));
        }
        string State() => string.Join("; ", Enumerable.Range(0, g.Vcpus).Select(cpu =>
            $"vCPU {cpu}: {counts[cpu].Iterations} iterations, {counts[cpu].Calls / 2.0} calls of f, rip 0x{m.Vcpus[cpu].Rip:x}{(m.Vcpus[cpu].IsHalted ? " halted" : "")}"));
        if (r.Reason != StopReason.Exited || r.ExitStatus != 0)
            return Outcome($"{Astray}: the machine stopped with {r.Reason} (status {r.ExitStatus}), not exit 0: {r.Message} ({State()}; {g.Iterations} each expected)");
        for (int cpu = 0; cpu < g.Vcpus; cpu++)
            if (counts[cpu].Iterations != (ulong)g.Iterations || counts[cpu].Calls != 2UL * (ulong)g.Iterations)
                return Outcome($"{Astray}: {State()} ({g.Iterations} each expected)");
        if (st?.Failure is { } failure) return Outcome($"{Astray}: DBT failure: {failure}");
        return Outcome(null);
    }

    /// <summary>
    /// The shape of both DBT scenarios: the guest (in <see cref="RingZeroGuest"/>'s kernel-alias
    /// layout) on a fresh machine with the DBT attached, its outcome checked for the bug and then
    /// for any other problem.
    /// </summary>
    private static Scenario GuestScenario<T>(string name, int vcpus, Action<Machine> load, DbtOptions options, int delayBound,
        Func<Machine, KernelDbt, RunResult, T> evaluate, Action<T>? observe, bool dispatcherPoints = false, long maxInstructions = MaxInstructions)
        where T : DbtGuestOutcome
    {
        // Set by Build, read by Check of the same execution (Coyote runs executions one at a time).
        KernelDbt? dbt = null;
        var shared = PointFilters.SharedRange(RingZeroGuest.KernelData, RingZeroGuest.KernelData + RingZeroGuest.DoneFlagsBytes);
        return new Scenario(name,
            ctx =>
            {
                var m = new Machine(ctx.Options(vcpus, maxInstructions, MemoryBytes, ReservedBytes));
                load(m);
                dbt = KernelDbt.Attach(m, options);
                return m;
            },
            run =>
            {
                var outcome = evaluate(run.Machine, dbt!, run.Result);
                observe?.Invoke(outcome);
                Verify.That(outcome.Bug is null, outcome.Bug ?? "");
                Verify.That(outcome.Problem is null, outcome.Problem ?? "");
            })
        {
            Entry = RingZeroGuest.KernelCode,
            Setup = v => v.Gpr(Reg.Rsp) = RingZeroGuest.KernelStackTop,
            Control = new CoyoteOptions
            {
                InterruptDelayBound = delayBound,
                PointFilter = dispatcherPoints ? shared : (kind, address) => kind != PointKind.CodePatch && shared(kind, address),
            },
            // The tick races are between a vCPU and its own interrupt: the interleavings that matter
            // are the interrupt delays, not data accesses (the done flags only end the run) nor the
            // dispatcher's chaining patches. The patch race needs those CodePatch points, which
            // exist only with the seams on.
            NeedsSchedulingPoints = dispatcherPoints,
        };
    }

    /// <summary>One run of a DBT guest outside Coyote: translated with options, or natively when options is null.</summary>
    private static T RunGuest<T>(ExecutionControl control, DbtOptions? options, int vcpus, Action<Machine> load,
        Func<Machine, KernelDbt?, RunResult, T> evaluate, long maxInstructions = MaxInstructions)
    {
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = MemoryBytes, ReservedBytes = ReservedBytes, MaxInstructions = maxInstructions, Control = control,
        });
        load(m);
        var dbt = options is null ? null : KernelDbt.Attach(m, options);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var r = m.Run(cts.Token, entry: RingZeroGuest.KernelCode, setup: v => v.Gpr(Reg.Rsp) = RingZeroGuest.KernelStackTop);
        return evaluate(m, dbt, r);
    }

    private enum Landing { Window, LookupEnd, Elsewhere }

    private static JumpTableRaceOutcome Evaluate(JumpTableRaceGuest g, Machine m, KernelDbt? dbt, RunResult r)
    {
        ulong Q(ulong va) => m.Memory.ReadU64(JumpTableRaceGuest.Phys(va));
        int ticks = 0, inWindow = 0, atEnd = 0;
        for (int cpu = 0; cpu < g.Vcpus; cpu++)
        {
            ulong pc = JumpTableRaceGuest.PerCpu(cpu);
            int n = (int)Math.Min(Q(pc + JumpTableRaceGuest.OffTicks), (ulong)g.Ticks);
            ticks += n;
            if (dbt is null) continue;
            for (int t = 1; t <= n; t++)
            {
                var (landing, _) = Classify(m, dbt, Q(pc + JumpTableRaceGuest.OffTickRips + (ulong)(t - 1) * 8));
                if (landing == Landing.Window) inWindow++;
                else if (landing == Landing.LookupEnd) atEnd++;
            }
        }
        JumpTableRaceOutcome Outcome(string? bug, string? problem) => new(bug, problem, r, ticks, inWindow, atEnd);

        for (int cpu = 0; cpu < g.Vcpus; cpu++)
        {
            ulong pc = JumpTableRaceGuest.PerCpu(cpu);
            if (Q(pc + JumpTableRaceGuest.OffWrong) == 0) continue;
            ulong target = Q(pc + JumpTableRaceGuest.OffWrongTarget);
            ulong rip = Q(pc + JumpTableRaceGuest.OffInterruptedRip);
            ulong tick = Q(pc + JumpTableRaceGuest.OffTicks);
            bool handlerTarget = (target - JumpTableRaceGuest.TargetBase) / JumpTableRaceGuest.TargetStride % 2 == 1;
            string where = dbt is null ? $"at 0x{rip:x}" : Classify(m, dbt, rip).Text;
            return Outcome(handlerTarget
                ? $"vCPU {cpu}'s main loop ran the timer handler's target C_{tick} (0x{target:x}) instead of A_{tick - 1}: " +
                  $"tick {tick} interrupted the jumptable lookup {where}, and the handler's jumptable miss replaced the level-1 entry the lookup had matched"
                : $"vCPU {cpu}'s timer handler ran the main loop's target 0x{target:x} (tick {tick}; last interrupt {where})", null);
        }
        if (r.Reason != StopReason.Exited || r.ExitStatus != 0)
            return Outcome(null, $"the machine stopped with {r.Reason} (status {r.ExitStatus}), not exit 0: {r.Message}");
        for (int cpu = 0; cpu < g.Vcpus; cpu++)
        {
            ulong pc = JumpTableRaceGuest.PerCpu(cpu);
            ulong n = Q(pc + JumpTableRaceGuest.OffTicks), handlerCalls = Q(pc + JumpTableRaceGuest.OffHandlerCalls), mainCalls = Q(pc + JumpTableRaceGuest.OffMainCalls);
            if (n != (ulong)g.Ticks || handlerCalls != (ulong)g.Ticks || mainCalls <= (ulong)g.Ticks)
                return Outcome(null, $"vCPU {cpu}: {n} ticks, {handlerCalls} handler calls, {mainCalls} main-loop calls (expected {g.Ticks}, {g.Ticks}, more than {g.Ticks})");
        }
        if (dbt is not null)
        {
            var s = dbt.Stats;
            // Every target's first call on each vCPU is a miss (A_0..A_{n-1} with interrupts off in
            // the main loop, C_1..C_n in the handler), and nothing else is: no main-loop miss with IF=1.
            long expected = 2L * g.Ticks * g.Vcpus;
            if (s.Failure is not null || s.Flushes != 0 || s.IndirectDispatches != expected)
                return Outcome(null, $"DBT: failure {s.Failure ?? "none"}, {s.Flushes} flushes, {s.IndirectDispatches} jumptable misses (expected {expected})");
        }
        return Outcome(null, null);
    }

    /// <summary>
    /// Where an interrupt landed in translated code: between the lookup's hit test and its read of tx
    /// (the window), at its closing ret after popfq, or elsewhere; with the instructions either side.
    /// </summary>
    private static (Landing Landing, string Text) Classify(Machine m, KernelDbt dbt, ulong rip)
    {
        var block = dbt.Translator.Blocks.FirstOrDefault(b => rip - b.CacheStart < (ulong)b.CacheLength);
        if (block is null) return (Landing.Elsewhere, $"at 0x{rip:x} (not in a translated block)");
        var bytes = m.Memory.Span(dbt.Cache.ToPhys(block.CacheStart), block.CacheLength).ToArray();
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes), block.CacheStart);
        Instruction previous = default;
        while (decoder.IP < block.CacheStart + (ulong)bytes.Length)
        {
            decoder.Decode(out var ins);
            if (ins.IP == rip)
            {
                bool hitTest = previous.Code == Code.Cmp_r64_rm64 && previous.Op0Register == Register.RAX && previous.MemoryBase == Register.RBX && previous.MemoryDisplacement64 == 0;
                bool readTx = ins.Code == Code.Mov_r64_rm64 && ins.Op0Register == Register.RAX && ins.MemoryBase == Register.RBX && ins.MemoryDisplacement64 == 8;
                var landing = hitTest || readTx ? Landing.Window
                    : previous.Code == Code.Popfq && ins.Code == Code.Retnq ? Landing.LookupEnd
                    : Landing.Elsewhere;
                string text = previous.Length == 0
                    ? $"before `{Format(ins)}` (cache 0x{rip:x})"
                    : $"between `{Format(previous)}` and `{Format(ins)}` (cache 0x{rip:x})";
                return (landing, text);
            }
            previous = ins;
        }
        return (Landing.Elsewhere, $"at 0x{rip:x} (not an instruction boundary of its block)");
    }

    private static string Format(in Instruction i)
    {
        var f = new IntelFormatter();
        f.Options.UppercaseHex = false;
        f.Options.ShowBranchSize = false;
        var o = new StringOutput();
        f.Format(i, o);
        // Branch hints (the translator's jcc prefixes) are noise in a message.
        return o.ToStringAndReset().Replace("hint-not-taken ", "").Replace("hint-taken ", "");
    }

    // ---- the tx-nextpc-loc save/restore (TxNextPcGuest) ----------------------------------------

    /// <summary>
    /// The paper's tx-nextpc-loc hazard: a tick delivered between the dispatcher exit stub's
    /// <c>popfq</c> (which restores IF=1) and its <c>jmp gs:[tx-nextpc-loc]</c> runs a timer handler
    /// whose own jumptable miss (C_t, fresh each tick) overwrites tx-nextpc-loc; the interrupted jmp
    /// goes to the right place only because the handler's entry translation saved tx-nextpc-loc in
    /// the frame's redundant slot and the iretq rule restored it (<see cref="TxNextPcGuest"/>, two
    /// vCPUs, each main loop making a fresh-target jumptable miss per iteration with IF=1). Planted
    /// bug (<see cref="DbtOptions.PlantedNoTxNextPcRestore"/>): iretq does not restore, so the
    /// interrupted exit continues at tx(C_t) in the main loop, which C_t reports. Correct form: the
    /// default iretq rule. Every miss runs with IF=0 from the lookup's cli to the exit stub's popfq,
    /// so a tick that becomes deliverable anywhere in there lands in the window; Coyote chooses each
    /// tick's delay from [0, delayBound) instructions after its deadline. As in
    /// <see cref="JumpTableLookup"/>, only the done flags are scheduling points.
    /// </summary>
    /// <param name="observe">Called with every execution's outcome before its check (measurements).</param>
    public static Scenario TxNextPcRestore(bool noRestore, int ticks = 8, uint period = TxNextPcPeriod, int delayBound = TxNextPcDelayBound, int vcpus = 2,
        int work = TxNextPcWork, Action<TxNextPcOutcome>? observe = null)
    {
        var guest = new TxNextPcGuest(vcpus, ticks, period, work);
        return GuestScenario(noRestore ? "tx-nextpc-no-restore" : "tx-nextpc-restore", vcpus, guest.Load,
            new DbtOptions { PlantedNoTxNextPcRestore = noRestore }, delayBound, (m, dbt, r) => EvaluateTxNextPc(guest, m, dbt, r), observe);
    }

    /// <summary>
    /// The tx-nextpc guest's default timer period: with no delay (a plain free-running or
    /// deterministic run) every tick falls outside a dispatcher exit, so even the planted bug passes
    /// plain runs (docs/verification.md has the numbers per period).
    /// </summary>
    public const uint TxNextPcPeriod = 300;
    public const int TxNextPcWork = 60, TxNextPcDelayBound = 256;

    /// <summary>One run of the tx-nextpc guest outside Coyote: translated with options, or natively when options is null.</summary>
    public static TxNextPcOutcome RunTxNextPcGuest(ExecutionControl control, DbtOptions? options, int ticks = 8, uint period = TxNextPcPeriod, int vcpus = 2,
        int work = TxNextPcWork)
    {
        var guest = new TxNextPcGuest(vcpus, ticks, period, work);
        return RunGuest(control, options, vcpus, guest.Load, (m, dbt, r) => EvaluateTxNextPc(guest, m, dbt, r));
    }

    private static TxNextPcOutcome EvaluateTxNextPc(TxNextPcGuest g, Machine m, KernelDbt? dbt, RunResult r)
    {
        ulong Q(ulong va) => m.Memory.ReadU64(TxNextPcGuest.Phys(va));
        // The exit stub is "popfq; jmp gs:[tx-nextpc-loc]": a tick in the window interrupted the jmp.
        ulong window = dbt is null ? ulong.MaxValue : dbt.Cache.ExitStub + 1;
        var nativeOf = dbt is null ? new Dictionary<ulong, ulong>() : dbt.Translator.Blocks.GroupBy(b => b.CacheStart).ToDictionary(b => b.Key, b => b.First().NativeStart);
        string Tx(ulong cacheAddress) => nativeOf.TryGetValue(cacheAddress, out ulong native) ? $"tx({TxNextPcGuest.TargetName(native)})" : $"0x{cacheAddress:x}";
        int ticks = 0, inWindow = 0, inWindowAtMiss = 0;
        long mainCalls = 0;
        for (int cpu = 0; cpu < g.Vcpus; cpu++)
        {
            ulong pc = TxNextPcGuest.PerCpu(cpu);
            int n = (int)Math.Min(Q(pc + TxNextPcGuest.OffTicks), (ulong)g.Ticks);
            ticks += n;
            mainCalls += (long)Q(pc + TxNextPcGuest.OffMainCalls);
            for (int t = 1; t <= n; t++)
            {
                ulong at = (ulong)(t - 1) * 8;
                if (Q(pc + TxNextPcGuest.OffTickRips + at) != window) continue;
                inWindow++;
                // The entry saved tx-nextpc-loc in the slot: the translation of the target the main
                // loop was calling (or of a first-time edge's target).
                if (nativeOf.TryGetValue(Q(pc + TxNextPcGuest.OffTickSlots + at), out ulong native) && native == Q(pc + TxNextPcGuest.OffTickExpected + at))
                    inWindowAtMiss++;
            }
        }
        TxNextPcOutcome Outcome(string? bug, string? problem) => new(bug, problem, r, ticks, inWindow, inWindowAtMiss, mainCalls);

        for (int cpu = 0; cpu < g.Vcpus; cpu++)
        {
            ulong pc = TxNextPcGuest.PerCpu(cpu);
            ulong status = Q(pc + TxNextPcGuest.OffWrong);
            if (status == 0) continue;
            ulong target = Q(pc + TxNextPcGuest.OffWrongTarget), expected = Q(pc + TxNextPcGuest.OffWrongExpected);
            ulong tick = Q(pc + TxNextPcGuest.OffTicks);
            ulong at = tick is >= 1 and <= TxNextPcGuest.MaxTicks ? (tick - 1) * 8 : 0;
            ulong rip = Q(pc + TxNextPcGuest.OffTickRips + at), slot = Q(pc + TxNextPcGuest.OffTickSlots + at);
            string where = dbt is null ? $"at 0x{rip:x}"
                : rip == window ? $"between the exit stub's `popfq` and `jmp gs:[tx-nextpc-loc]` (cache 0x{rip:x})"
                : Classify(m, dbt, rip).Text;
            string name = TxNextPcGuest.TargetName(target);
            return Outcome(status switch
            {
                TxNextPcGuest.StatusHandlerTargetInMainLoop =>
                    $"vCPU {cpu}'s main loop continued at the timer handler's target {name} (0x{target:x}) instead of {TxNextPcGuest.TargetName(expected)}: " +
                    $"tick {tick} arrived {where}, the handler's jumptable miss for {name} overwrote tx-nextpc-loc, " +
                    $"and iretq did not restore it from the frame's redundant slot (which held {Tx(slot)})",
                TxNextPcGuest.StatusWrongMainTarget =>
                    $"vCPU {cpu}'s main loop reached {name} (0x{target:x}) while calling {TxNextPcGuest.TargetName(expected)} (tick {tick}; last tick {where})",
                TxNextPcGuest.StatusMainTargetInHandler =>
                    $"vCPU {cpu}'s timer handler ran the main loop's target {name} (0x{target:x}) (tick {tick}; last tick {where})",
                _ => $"vCPU {cpu} recorded status {status} at target 0x{target:x}",
            }, null);
        }
        if (r.Reason != StopReason.Exited || r.ExitStatus != 0)
            return Outcome(null, $"the machine stopped with {r.Reason} (status {r.ExitStatus}), not exit 0: {r.Message}");
        long iterations = 0;
        for (int cpu = 0; cpu < g.Vcpus; cpu++)
        {
            ulong pc = TxNextPcGuest.PerCpu(cpu);
            ulong n = Q(pc + TxNextPcGuest.OffTicks), handlerCalls = Q(pc + TxNextPcGuest.OffHandlerCalls);
            ulong main = Q(pc + TxNextPcGuest.OffMainCalls), iter = Q(pc + TxNextPcGuest.OffIter);
            iterations += (long)iter;
            if (n != (ulong)g.Ticks || handlerCalls != (ulong)g.Ticks || main != iter || main <= (ulong)g.Ticks)
                return Outcome(null, $"vCPU {cpu}: {n} ticks, {handlerCalls} handler calls, {main} main-loop calls of {iter} iterations (expected {g.Ticks}, {g.Ticks}, every iteration's)");
        }
        if (dbt is not null)
        {
            var s = dbt.Stats;
            // Every call is a first-time target on its vCPU: one jumptable miss per main-loop
            // iteration and per tick.
            long expected = iterations + (long)g.Ticks * g.Vcpus;
            if (s.Failure is not null || s.Flushes != 0 || s.IndirectDispatches != expected)
                return Outcome(null, $"DBT: failure {s.Failure ?? "none"}, {s.Flushes} flushes, {s.IndirectDispatches} jumptable misses (expected {expected})");
        }
        return Outcome(null, null);
    }
}

/// <summary>What one run of <see cref="TxNextPcGuest"/> showed.</summary>
/// <param name="Bug">The hazard's failure (an interrupted dispatcher exit continued at the handler's target), or another wrong continuation; null if none.</param>
/// <param name="Problem">Any other way the run did not pass (a stop other than exit 0, wrong counts, a DBT failure), or null.</param>
/// <param name="Ticks">Timer ticks delivered (all vCPUs).</param>
/// <param name="TicksInWindow">
/// Ticks delivered between the exit stub's popfq and its jmp (the interrupted RIP in the frame is the
/// jmp): every one is the hazard under the planted bug; in a clean run they show the window was hit.
/// </param>
/// <param name="TicksInWindowAtMiss">
/// Of those, the ones whose frame slot held the translation of the main loop's current target (the
/// tick interrupted the exit of that target's jumptable miss), rather than a first-time edge's.
/// </param>
/// <param name="MainCalls">Main-loop target calls that arrived where they should (all vCPUs).</param>
public sealed record TxNextPcOutcome(string? Bug, string? Problem, RunResult Result, int Ticks, int TicksInWindow, int TicksInWindowAtMiss, long MainCalls)
    : DbtGuestOutcome(Bug, Problem, Result, Ticks, TicksInWindow);
