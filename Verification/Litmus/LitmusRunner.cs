using System.Diagnostics;
using System.Text;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Litmus;

public enum LitmusVerdict { Never, Sometimes, Always }

/// <summary>One final state: the observed targets' values (in <see cref="LitmusTest.Observed"/> order) and whether the condition's proposition holds.</summary>
public sealed record LitmusOutcome(IReadOnlyList<ulong> Values, bool Satisfies);

/// <summary>What running a litmus test found: the distinct final states, and herd's counts and verdict over them.</summary>
public sealed record LitmusResult(LitmusTest Test, MemoryModel Model, string Method, IReadOnlyList<LitmusOutcome> States, long Explored, TimeSpan Elapsed)
{
    public int Positive => States.Count(s => s.Satisfies);
    public int Negative => States.Count - Positive;
    public LitmusVerdict Verdict => Positive == 0 ? LitmusVerdict.Never : Negative == 0 ? LitmusVerdict.Always : LitmusVerdict.Sometimes;

    /// <summary>herd's "Ok": the condition as quantified holds.</summary>
    public bool Validated => Test.Condition.Quantifier switch
    {
        Quantifier.Exists => Positive > 0,
        Quantifier.NotExists => Positive == 0,
        _ => Negative == 0,
    };

    /// <summary>The one line herd7 prints, to diff against its output.</summary>
    public string ObservationLine => $"Observation {Test.Name} {Verdict} {Positive} {Negative}";

    /// <summary>herd7's report for the test: the final states, Ok/No, the witnesses, the condition and the observation.</summary>
    public string HerdText()
    {
        var sb = new StringBuilder();
        string kind = Test.Condition.Quantifier switch { Quantifier.Exists => "Allowed", Quantifier.NotExists => "Forbidden", _ => "Required" };
        sb.AppendLine($"Test {Test.Name} {kind}");
        sb.AppendLine($"States {States.Count}");
        foreach (var s in States.OrderBy(s => Format(s), StringComparer.Ordinal)) sb.AppendLine(Format(s));
        sb.AppendLine(Validated ? "Ok" : "No");
        sb.AppendLine("Witnesses");
        sb.AppendLine($"Positive: {Positive} Negative: {Negative}");
        sb.AppendLine($"Condition {Test.Condition}");
        sb.AppendLine(ObservationLine);
        sb.AppendLine($"Time {Test.Name} {Elapsed.TotalSeconds:0.00}");
        return sb.ToString();
    }

    private string Format(LitmusOutcome s) =>
        string.Concat(Test.Observed.Select((t, i) => $"{t.Display}={(long)(s.Values[i] & t.Mask) switch { var v when t.Size < 8 && (s.Values[i] & t.Mask) >> (8 * t.Size - 1) != 0 => v - (1L << (8 * t.Size)), var v => v }}; "));
}

/// <summary>A litmus test the machine could not run to its end (a fault, a runaway thread, a state space over the budget).</summary>
public sealed class LitmusRunException(string message) : Exception(message);

/// <summary>
/// Runs litmus tests as ring-0 code on the machine: thread i on vCPU i, the locations in RAM.
/// <see cref="Exhaustive"/> enumerates every execution (each step is one instruction of one vCPU
/// or one store draining from one buffer) with the machine itself doing the work, depth first
/// with a visited set over whole machine states; <see cref="Sample"/> runs the test under Coyote
/// with real start-up IPIs and a done count, iterations times.
/// </summary>
public static class LitmusRunner
{
    public const ulong CodeBase = 0x100000, DataBase = 0x200000, StackBase = 0x300000, DoneCount = 0x2F0000, SavedRax = 0x2F0040;
    private const ulong LocationStride = 64, CodeStride = 0x1000;

    private static ulong StackTop(int thread) => StackBase + (ulong)thread * 0x1000 + 0x1000;

    private static ulong AddressOf(LitmusTest test, string loc)
    {
        for (int i = 0; i < test.Locations.Count; i++)
            if (test.Locations[i].Name == loc) return DataBase + (ulong)i * LocationStride;
        throw new LitmusRunException($"{test.File}: unknown location '{loc}'");
    }

    private static void CheckSize(LitmusTest test, LitmusAssembler.Code code, int thread)
    {
        if ((ulong)code.Bytes.Length > CodeStride)
            throw new LitmusRunException($"{test.File}: P{thread}'s code is {code.Bytes.Length} bytes; the runner gives a thread {CodeStride} bytes");
    }

    private static void Check(LitmusTest test)
    {
        if (test.Threads.Count is < 1 or > 8) throw new LitmusRunException($"{test.File}: {test.Threads.Count} threads; the runner takes 1 to 8");
        if (test.Locations.Count > 0x1000 / (int)LocationStride) throw new LitmusRunException($"{test.File}: more than {0x1000 / LocationStride} locations");
    }

    private static MachineOptions Options(LitmusTest test, ExecutionControl control, MemoryModel model) => new()
    {
        Vcpus = test.Threads.Count,
        MemoryBytes = 8UL << 20,
        ReservedBytes = 2UL << 20,
        Control = control,
        MemoryModel = model,
    };

    private static void WriteLocations(Machine m, LitmusTest test)
    {
        foreach (var l in test.Locations)
        {
            ulong v = l.Initial.AddressOf is { } a ? AddressOf(test, a) : (ulong)l.Initial.Constant;
            BitConverter.TryWriteBytes(m.Memory.Span(AddressOf(test, l.Name), 8), v);
        }
    }

    private static ulong RegisterValue(LitmusTest test, LitmusValue v) => v.AddressOf is { } a ? AddressOf(test, a) : (ulong)v.Constant;
    private static int RegIndex(string canonical) => LitmusParser.TryRegister(canonical, out var r) ? r.GetFullRegister() - Register.RAX : throw new ArgumentException(canonical);

    private static IReadOnlyList<ulong> Observe(Machine m, LitmusTest test, bool exitedThroughPort = false) =>
        test.Observed.Select(t => t.IsRegister
            ? (exitedThroughPort && t.Thread == 0 && t.Name == "rax" ? m.Memory.ReadU64(SavedRax) : m.Vcpus[t.Thread].Gpr(RegIndex(t.Name)))
            : m.Memory.ReadU64(AddressOf(test, t.Name)) & (t.Size >= 8 ? ulong.MaxValue : (1UL << (8 * t.Size)) - 1)).ToArray();

    private static LitmusOutcome Outcome(LitmusTest test, IReadOnlyList<ulong> values)
    {
        var index = test.Observed.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i);
        bool sat = test.Condition.Prop.Eval(t => values[index[t]], loc => AddressOf(test, loc));
        return new LitmusOutcome(values, sat);
    }

    // ---- exhaustive ------------------------------------------------------------------------------

    /// <summary>
    /// Every execution of the test under the model: depth-first over the moves "vCPU i executes
    /// its next instruction" and "vCPU i's oldest buffered store reaches memory", pruning states
    /// already seen (registers, flags, RIP, buffers and the locations of every vCPU). maxStates
    /// bounds the search; a thread that runs maxSteps instructions without reaching its end is a
    /// runaway.
    /// </summary>
    public static LitmusResult Exhaustive(LitmusTest test, MemoryModel model = MemoryModel.Tso, long maxStates = 1_000_000, int maxSteps = 1000)
    {
        Check(test);
        var sw = Stopwatch.StartNew();
        using var m = new Machine(Options(test, new HostStepped(), model));
        WriteLocations(m, test);
        int n = test.Threads.Count;
        var code = new LitmusAssembler.Code[n];
        for (int t = 0; t < n; t++)
        {
            code[t] = LitmusAssembler.Assemble(test, test.Threads[t], CodeBase + (ulong)t * CodeStride, loc => AddressOf(test, loc));
            CheckSize(test, code[t], t);
            code[t].Bytes.CopyTo(m.Memory.Span(code[t].Address, code[t].Bytes.Length));
        }
        for (int t = 0; t < n; t++)
        {
            var v = t == 0 ? m.Boot(entry: code[0].Start) : m.BootAp(t, code[t].Start, StackTop(t));
            // herd starts every register at 0 (the boot protocol gives the BSP a boot-info pointer).
            for (int r = 0; r < 16; r++) if (r != Reg.Rsp) v.Gpr(r) = 0;
            foreach (var (reg, value) in test.Threads[t].Registers) v.Gpr(RegIndex(reg)) = RegisterValue(test, value);
        }
        // The state the search saves and compares is the registers, the buffers and the test's
        // locations: an access anywhere else would make it unsound, so it is refused.
        var guard = new DataWindow(DataBase, DataBase + (ulong)Math.Max(1, test.Locations.Count) * LocationStride);
        m.Observer = guard;
        var search = new Search(m, test, code, maxStates, maxSteps, guard);
        // Deep tests recurse deeply: a thread with a stack to match.
        Exception? failed = null;
        var worker = new Thread(() =>
        {
            try { search.Visit(0); }
            catch (Exception e) { failed = e; }
        }, 64 << 20);
        worker.Start();
        worker.Join();
        if (failed is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failed).Throw();
        sw.Stop();
        var states = search.Finals.Select(f => Outcome(test, f)).ToList();
        return new LitmusResult(test, model, "exhaustive", states, search.Visited.Count, sw.Elapsed);
    }

    /// <summary>Notes the first data access outside the test's locations.</summary>
    private sealed class DataWindow(ulong start, ulong end) : AccessObserver
    {
        public string? Outside;
        public override void Access(Vcpu v, ulong va, int size, AccessKind kind, ulong value)
        {
            if (Outside is null && (va < start || va + (ulong)size > end))
                Outside = $"P{v.Index} accesses 0x{va:x} at rip 0x{v.CurrentRip:x}, outside the test's locations";
        }
    }

    private sealed unsafe class Search(Machine m, LitmusTest test, LitmusAssembler.Code[] code, long maxStates, int maxSteps, DataWindow guard)
    {
        public readonly HashSet<ulong[]> Visited = new(new KeyComparer());
        public readonly HashSet<ulong[]> Finals = new(new KeyComparer());
        private readonly Vcpu[] vcpus = m.Vcpus;
        private readonly int dataBytes = Math.Max(1, test.Locations.Count) * (int)LocationStride;

        public void Visit(int depth)
        {
            if (!Visited.Add(Key()))
                return;
            if (Visited.Count > maxStates)
                throw new LitmusRunException($"{test.File}: more than {maxStates:N0} states; run it with --iterations (sampling under Coyote) instead");
            bool any = false;
            Saved? saved = null;
            for (int t = 0; t < vcpus.Length; t++)
            {
                var v = vcpus[t];
                if (v.Rip != code[t].End)
                {
                    if (depth > maxSteps * vcpus.Length * 2)
                        throw new LitmusRunException($"{test.File}: P{t} ran {maxSteps:N0} instructions without reaching its end (rip 0x{v.Rip:x}): a loop?");
                    any = true;
                    saved ??= Save();
                    v.RunFor(1);
                    if (m.Stopping)
                        throw new LitmusRunException($"{test.File}: P{t} stopped the machine at rip 0x{v.CurrentRip:x}{Source(t, v.Rip)}: {m.StopState.Message}");
                    if (guard.Outside is { } outside)
                        throw new LitmusRunException($"{test.File}: {outside}{Source(t, v.Rip)}: the runner keeps only the locations in its state");
                    Visit(depth + 1);
                    Restore(saved);
                }
                if (v.Tso is { Count: > 0 } sb)
                {
                    any = true;
                    saved ??= Save();
                    sb.DrainOne();
                    Visit(depth + 1);
                    Restore(saved);
                }
            }
            if (!any) Finals.Add([.. Observe(m, test)]);
        }

        private string Source(int t, ulong rip)
        {
            var hit = code[t].Map.LastOrDefault(e => e.Address <= rip);
            return hit.Source is null ? "" : $" (line {hit.Source.Line}: {hit.Source.Text})";
        }

        private sealed record Saved(byte[] Cpu, StoreBuffer.Entry[][] Buffers, byte[] Data);

        private Saved Save()
        {
            int size = sizeof(CpuState);
            var cpu = new byte[size * vcpus.Length];
            for (int t = 0; t < vcpus.Length; t++) new ReadOnlySpan<byte>(vcpus[t].S, size).CopyTo(cpu.AsSpan(t * size));
            var buffers = vcpus.Select(v => v.Tso?.Save() ?? []).ToArray();
            return new Saved(cpu, buffers, m.Memory.Span(DataBase, dataBytes).ToArray());
        }

        private void Restore(Saved s)
        {
            int size = sizeof(CpuState);
            for (int t = 0; t < vcpus.Length; t++)
            {
                s.Cpu.AsSpan(t * size, size).CopyTo(new Span<byte>(vcpus[t].S, size));
                vcpus[t].Tso?.Load(s.Buffers[t]);
            }
            s.Data.CopyTo(m.Memory.Span(DataBase, dataBytes));
        }

        private ulong[] Key()
        {
            var k = new List<ulong>(vcpus.Length * 24 + dataBytes / 8);
            foreach (var v in vcpus)
            {
                k.Add(v.Rip);
                k.Add(v.Rflags);
                for (int r = 0; r < 16; r++) k.Add(v.Gpr(r));
                if (v.Tso is { } sb)
                {
                    k.Add((ulong)sb.Count);
                    foreach (var e in sb.Entries) { k.Add(e.Pa | (ulong)e.Size << 56); k.Add(e.Value); }
                }
            }
            var data = m.Memory.Span(DataBase, dataBytes);
            for (int i = 0; i < dataBytes; i += 8) k.Add(BitConverter.ToUInt64(data[i..]));
            return [.. k];
        }
    }

    private sealed class KeyComparer : IEqualityComparer<ulong[]>
    {
        public bool Equals(ulong[]? a, ulong[]? b) => a.AsSpan().SequenceEqual(b);
        public int GetHashCode(ulong[] a)
        {
            var h = new HashCode();
            foreach (var x in a) h.Add(x);
            return h.ToHashCode();
        }
    }

    // ---- sampling under Coyote ------------------------------------------------------------------

    /// <summary>
    /// Runs the test `iterations` times under Coyote (random strategy from seed): the BSP starts
    /// the APs with start-up IPIs, each thread sets its registers, runs the test, and adds one to a
    /// done count with a locked add; the BSP waits for the count and exits. Coyote chooses the
    /// interleaving and, under TSO, when each store drains. Reports the distinct final states seen.
    /// </summary>
    public static LitmusResult Sample(LitmusTest test, int iterations, uint seed = 1, MemoryModel model = MemoryModel.Tso, int maxSchedulingSteps = 20_000)
    {
        Check(test);
        if (iterations <= 0) throw new ArgumentOutOfRangeException(nameof(iterations), "at least one iteration");
        var sw = Stopwatch.StartNew();
        int n = test.Threads.Count;
        var code = new LitmusAssembler.Code[n];
        for (int t = 0; t < n; t++)
        {
            int thread = t;
            code[t] = LitmusAssembler.Assemble(test, test.Threads[t], CodeBase + (ulong)t * CodeStride, loc => AddressOf(test, loc),
                prologue: a => Prologue(a, test, thread), epilogue: a => Epilogue(a, thread, n));
            CheckSize(test, code[t], t);
        }
        var seen = new HashSet<ulong[]>(new KeyComparer());
        var scenario = new Scenario($"litmus {test.Name}", ctx =>
        {
            var m = new Machine(Options(test, ctx.Control, model));
            WriteLocations(m, test);
            foreach (var c in code) c.Bytes.CopyTo(m.Memory.Span(c.Address, c.Bytes.Length));
            return m;
        }, run =>
        {
            run.ExpectExit(0);
            lock (seen) seen.Add([.. Observe(run.Machine, test, exitedThroughPort: true)]);
        })
        {
            Entry = code[0].Address,
            Control = new CoyoteOptions
            {
                InterruptDelayBound = 1,
                PointFilter = (kind, address) => kind is not (PointKind.Load or PointKind.Store) || address - DataBase < 0x1000,
            },
        };
        var report = Explorer.Explore(scenario, new ExploreOptions { Iterations = (uint)iterations, Seed = seed, MaxSchedulingSteps = (uint)maxSchedulingSteps, Strategy = ExploreStrategy.Random });
        if (report.BugFound)
            throw new LitmusRunException($"{test.File}: an execution did not finish: {report.Failure}");
        sw.Stop();
        return new LitmusResult(test, model, $"coyote({iterations} iterations, seed {seed})", seen.Select(s => Outcome(test, s)).ToList(), report.IterationsRun, sw.Elapsed);
    }

    private static void Prologue(Assembler a, LitmusTest test, int thread)
    {
        if (thread == 0)
        {
            // Start the APs: fill the mailbox, then the start-up IPI. wrmsr to the x2APIC ICR does
            // not drain the store buffer (SDM 9.3), so without the mfence the AP could read an
            // empty mailbox under TSO.
            for (int t = 1; t < test.Threads.Count; t++)
            {
                ulong entry = CodeBase + (ulong)t * CodeStride;
                Smp.Boot.RingZeroGuest.EmitStartAp(a, t, x => x.mov(rax, entry), StackTop(t), fence: true);
            }
            // herd starts every register at 0: clear what the start-up and the boot protocol left.
            foreach (var r in (AssemblerRegister32[])[eax, ecx, edx, ebx, ebp, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d])
                a.xor(r, r);
        }
        foreach (var (reg, value) in test.Threads[thread].Registers)
        {
            LitmusParser.TryRegister(reg, out var r);
            a.mov(new AssemblerRegister64(r), RegisterValue(test, value));
        }
    }

    private static void Epilogue(Assembler a, int thread, int threads)
    {
        a.@lock.inc(__qword_ptr[DoneCount]);
        if (thread == 0)
        {
            var wait = a.CreateLabel();
            a.Label(ref wait);
            a.pause();
            a.cmp(__qword_ptr[DoneCount], threads);
            a.jne(wait);
            a.mov(__qword_ptr[SavedRax], rax); // the exit port takes eax: Observe reads P0's rax here
            a.mov(eax, 0u);
            a.@out(0xF4, eax);
        }
        var park = a.CreateLabel();
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);
    }
}
