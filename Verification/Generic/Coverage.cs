using System.Text;
using System.Text.Json;
using Harness.Dbt;
using Harness.Smp;
using Harness.Smp.Control;

namespace Harness.Verification.Generic;

/// <summary>
/// How much of the interleaving space an exploration saw, from the generic scenarios' own hooks:
/// the conflicting access pairs (two vCPUs, one address, at least one write: the RIP pair and
/// which orders were seen, as Snowboard's "potential memory communication"), where interrupts were
/// delivered (native code, a rule's translation at which byte of its sequence, a stub, the level-2
/// routine, an entry path), and the scheduling points per execution. Coyote reports coverage only
/// for actors; this is the harness's own. One instance per exploration; executions run one at a
/// time, but the hooks run on vCPU threads, so the tables are locked (never across a scheduling
/// point: nothing here is one).
/// </summary>
public sealed class Coverage
{
    private readonly object gate = new();
    // The current execution's last access per address: (vCPU, rip, write).
    private readonly Dictionary<ulong, (int Vcpu, ulong Rip, bool Write)> last = [];
    // (first rip, second rip) in the order they happened -> times seen, over the exploration.
    private readonly Dictionary<(ulong, ulong), long> pairs = [];
    private readonly Dictionary<(string Region, long Offset), long> interrupts = [];
    private readonly Dictionary<string, int> sequenceLength = [];
    private readonly Dictionary<(string Region, int Vector), long> vectors = [];
    private readonly List<long> pointsPerExecution = [];
    private Func<ulong, string> symbolize = rip => $"0x{rip:x}";

    public int Executions { get { lock (gate) return pointsPerExecution.Count; } }

    /// <summary>Hooks one execution's machine (call from the scenario's Build, after the DBT is attached).</summary>
    public void Attach(CoyoteControl control, Machine m, KernelDbt? dbt, Dbt.Kernel.KernelImage? symbols)
    {
        lock (gate) last.Clear();
        if (symbols is not null)
        {
            var name = Generic.Symbolizer.For(symbols);
            symbolize = rip => name(rip) is { Length: > 0 } n ? n : $"0x{rip:x}";
        }
        var previousPoint = control.OnPoint;
        control.OnPoint = (v, kind, address) =>
        {
            previousPoint?.Invoke(v, kind, address);
            if (kind is PointKind.Load or PointKind.Store or PointKind.Atomic) Access(v.Index, Native(m, v.CurrentRip), address & ~7UL, kind != PointKind.Load);
        };
        m.Attach(new HookAgent { OnEventDelivering = (v, vector, raised, rip) => { if (!raised) Interrupt(Region(dbt, rip), vector); } });
    }

    /// <summary>Ends one execution (from the scenario's check): its scheduling points.</summary>
    public void EndExecution(long points)
    {
        lock (gate) pointsPerExecution.Add(points);
    }

    private void Access(int vcpu, ulong rip, ulong address, bool write)
    {
        lock (gate)
        {
            if (last.TryGetValue(address, out var p) && p.Vcpu != vcpu && (p.Write || write))
                pairs[(p.Rip, rip)] = pairs.GetValueOrDefault((p.Rip, rip)) + 1;
            last[address] = (vcpu, rip, write);
        }
    }

    private void Interrupt((string Region, long Offset, int Length) at, int vector)
    {
        lock (gate)
        {
            vectors[(at.Region, vector)] = vectors.GetValueOrDefault((at.Region, vector)) + 1;
            interrupts[(at.Region, at.Offset)] = interrupts.GetValueOrDefault((at.Region, at.Offset)) + 1;
            if (at.Length > 0) sequenceLength[at.Region] = Math.Max(sequenceLength.GetValueOrDefault(at.Region), at.Length);
        }
    }

    private static ulong Native(Machine m, ulong rip) => m.OriginOf(rip) is { } o ? o.NativeRip : rip;

    /// <summary>Where an interrupt came: the region (native, a rule, a stub) and the byte offset inside it (the rule's translation of one instruction, the entry path, the stub).</summary>
    private static (string Region, long Offset, int Length) Region(KernelDbt? dbt, ulong rip)
    {
        if (dbt is null) return ("native code", -1, 0);
        var r = dbt.RegionAt(rip);
        return r.Kind switch
        {
            CodeKind.Native => ("native code", -1, 0),
            CodeKind.ExitStubPopfq or CodeKind.ExitStubJmp => ("dispatcher exit stub", r.Offset, r.Length),
            CodeKind.Level2Routine => ("level-2 jumptable routine", r.Offset, 0),
            CodeKind.EdgeStub => ("edge stub", -1, 0),
            CodeKind.DrkStub => ("drk iretq/syscall stub", -1, 0),
            CodeKind.EntryPath => ("interrupt entry path", r.Offset, r.Length),
            CodeKind.Rule => ($"rule {r.Rule}", r.Offset, r.Length),
            _ => ("translated code", -1, 0),
        };
    }

    public sealed record PairRow(string First, string Second, long Seen, bool BothOrders);
    public sealed record InterruptRow(string Region, long Deliveries, int OffsetsHit, int SequenceBytes, IReadOnlyList<long> Offsets, IReadOnlyDictionary<int, long> Vectors);

    /// <summary>The report: pairs (most seen first), interrupt regions, points per execution.</summary>
    public (IReadOnlyList<PairRow> Pairs, IReadOnlyList<InterruptRow> Interrupts, long MinPoints, double AvgPoints, long MaxPoints) Report()
    {
        lock (gate)
        {
            var rows = new List<PairRow>();
            foreach (var ((a, b), n) in pairs)
            {
                if (pairs.ContainsKey((b, a)) && a > b) continue;   // reported once, from the lower rip
                long back = a == b ? n : pairs.GetValueOrDefault((b, a));
                rows.Add(new PairRow(symbolize(a), symbolize(b), n + (a == b ? 0 : back), a == b || back > 0));
            }
            var regions = interrupts.GroupBy(x => x.Key.Region).Select(g => new InterruptRow(g.Key, g.Sum(x => x.Value),
                g.Count(x => x.Key.Offset >= 0), sequenceLength.GetValueOrDefault(g.Key), g.Where(x => x.Key.Offset >= 0).Select(x => x.Key.Offset).Order().ToList(),
                vectors.Where(v => v.Key.Region == g.Key).ToDictionary(v => v.Key.Vector, v => v.Value)))
                .OrderByDescending(r => r.Deliveries).ToList();
            var pts = pointsPerExecution;
            return (rows.OrderByDescending(r => r.Seen).ToList(), regions,
                pts.Count == 0 ? 0 : pts.Min(), pts.Count == 0 ? 0 : pts.Average(), pts.Count == 0 ? 0 : pts.Max());
        }
    }

    /// <summary>The coverage as JSON (every pair and region), for --coverage FILE.json.</summary>
    public string ToJson(string scenario, int iterations, bool bugFound)
    {
        var (p, i, min, avg, max) = Report();
        return JsonSerializer.Serialize(new
        {
            scenario, iterations, executionsChecked = Executions, buggyExecutions = bugFound ? 1 : 0,
            schedulingPointsPerExecution = new { min, avg, max },
            conflictingPairs = p.Select(r => new { first = r.First, second = r.Second, seen = r.Seen, bothOrders = r.BothOrders }),
            interrupts = i.Select(r => new { region = r.Region, deliveries = r.Deliveries, vectors = r.Vectors.ToDictionary(v => v.Key.ToString(), v => v.Value), offsetsHit = r.OffsetsHit, sequenceBytes = r.SequenceBytes, offsets = r.Offsets }),
        }, new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>The translator holds external interrupts to native boundaries (DbtOptions.InterruptsViaDispatcher): no DBT window is expected to be interrupted.</summary>
    public bool PreciseInterrupts { get; set; }

    /// <summary>A text summary: the counts, the top pairs, the pairs seen in one order only, and the interrupt regions.</summary>
    public string Summary(int top = 8)
    {
        var (p, i, min, avg, max) = Report();
        var sb = new StringBuilder();
        sb.AppendLine($"coverage: {Executions} executions; scheduling points per execution min {min:N0}, avg {avg:N0}, max {max:N0}");
        sb.AppendLine($"  conflicting access pairs: {p.Count} ({p.Count(r => r.BothOrders)} seen in both orders)");
        foreach (var r in p.Take(top)) sb.AppendLine($"    {r.First} <-> {r.Second}: {r.Seen:N0}{(r.BothOrders ? "" : " (one order only)")}");
        var oneOrder = p.Where(r => !r.BothOrders).Take(top).ToList();
        if (oneOrder.Count > 0)
        {
            sb.AppendLine("  seen in one order only (the other is unexplored):");
            foreach (var r in oneOrder) sb.AppendLine($"    {r.First} -> {r.Second}");
        }
        sb.AppendLine("  interrupts delivered, by where they came:");
        foreach (var r in i)
            sb.AppendLine($"    {r.Region}: {r.Deliveries:N0} (vector {string.Join(", ", r.Vectors.OrderBy(v => v.Key).Select(v => $"{v.Key}: {v.Value}"))})" + (r.SequenceBytes > 0 || r.OffsetsHit > 0
                ? $" at {r.OffsetsHit} distinct offset(s){(r.SequenceBytes > 0 ? $" of sequences up to {r.SequenceBytes} bytes" : "")}: {string.Join(",", r.Offsets.Take(16))}{(r.Offsets.Count > 16 ? ",..." : "")}"
                : ""));
        var dbtRegions = new[] { "dispatcher exit stub", "level-2 jumptable routine", "interrupt entry path" };
        var missing = dbtRegions.Where(d => i.All(r => r.Region != d)).ToList();
        if (PreciseInterrupts) sb.AppendLine("  external interrupts are held to native instruction boundaries (drk): the DBT's windows are never interrupted by design");
        else if (missing.Count > 0) sb.AppendLine($"  never interrupted (uncovered DBT windows): {string.Join(", ", missing)}");
        return sb.ToString();
    }
}
