using Iced.Intel;

namespace Harness.Properties.Generators;

/// <summary>What a property lets its programs contain.</summary>
public sealed record GenOptions
{
    public int MaxPieces { get; init; } = 12;
    /// <summary>A timer whose ticks arrive at generated instruction counts.</summary>
    public bool Interrupts { get; init; } = true;
    /// <summary>Loads and stores through unmapped addresses with fixups.</summary>
    public bool Faults { get; init; } = true;
    public int MinVcpus { get; init; } = 1;
    public int MaxVcpus { get; init; } = 1;
    public int MaxDepth { get; init; } = 2;

    public static GenOptions Default => new();
}

/// <summary>
/// Random programs from a table of shapes: each row a weight and a generator of one piece (Iced's
/// instruction tables through the differential suite's catalog for the plain instructions; the
/// control-flow, fault and shared-memory shapes the translator's rules treat differently).
/// </summary>
public static class ProgramGen
{
    private sealed record Row(string Name, int Weight, Func<Rng, GenOptions, int, int, Piece?> Make);

    /// <summary>Catalog forms a generated kernel can run anywhere: no string instructions (rcx-long), no division (#DE), no absolute moffs, no bit-string offsets (any address).</summary>
    public static readonly IReadOnlyList<Form> Forms = InstructionCatalog.All.Where(f =>
        f.Family is not Family.String
        && f.Mnemonic is not (Mnemonic.Div or Mnemonic.Idiv)
        && !f.Slots.Any(s => s.Kind == SlotKind.MemOffs)
        && !(f.Family == Family.Bits && f.Mnemonic is Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc
             && f.Slots.Length == 2 && f.Slots[1].Kind == SlotKind.Reg)).ToArray();

    private static readonly Row[] rows =
    [
        new("instruction", 40, (r, o, depth, vcpus) => RandomOp(r)),
        new("push-pop", 4, (r, o, depth, vcpus) => new PushPop(Pool.Random(r, 8), Pool.Random(r, 8))),
        new("rip-relative", 6, (r, o, depth, vcpus) => new RipRelative(Pool.Random(r, 8), 1 << r.Next(4), Store: vcpus == 1 && r.Chance(0.4), r.Next(64))),
        new("shared-add", 3, (r, o, depth, vcpus) => new SharedAdd(r.Next(64), r.Range(1, 1000))),
        new("shared-plain", 2, (r, o, depth, vcpus) => new SharedPlain(r.Next(64), r.Range(-1000, 1000), Store: r.Chance(0.5))),
        new("stack-frame", 3, (r, o, depth, vcpus) => StackFrameOf(r)),
        new("flags-bracket", 3, (r, o, depth, vcpus) => new Bracket(InterruptsOff: false, Body(r, o, depth, vcpus))),
        new("cli-bracket", 2, (r, o, depth, vcpus) => new Bracket(InterruptsOff: true, Body(r, o, depth, vcpus))),
        new("skip", 6, (r, o, depth, vcpus) => new Skip((ConditionCode)r.Range(1, 16), Body(r, o, depth, vcpus))),
        new("jump", 2, (r, o, depth, vcpus) => new Jump(Body(r, o, depth, vcpus))),
        new("loop", 4, (r, o, depth, vcpus) => r.Next(3) is var k && (LoopKind)k == LoopKind.JrcxzGuarded
            ? new Repeat(LoopKind.JrcxzGuarded, r.Range(0, 5), Body(r, o, depth, vcpus))
            : new Repeat((LoopKind)k, r.Range(1, 5), Body(r, o, depth, vcpus))),
        new("call", 10, (r, o, depth, vcpus) => new Call((CallKind)r.Next(Enum.GetValues<CallKind>().Length), Pool.Random(r, 8), r.Range(1, 4), Body(r, o, depth, vcpus))),
        new("aliased-calls", 3, (r, o, depth, vcpus) => new AliasedCalls(Pool.Random(r, 8), r.Range(2, Layout.MaxAliases), r.Range(1, 3), r.Next(Layout.AliasGroups))),
        new("fault", 3, (r, o, depth, vcpus) => o.Faults ? new Fault(Pool.Random(r, 8), 1 << r.Next(4), Store: r.Chance(0.5)) : null),
    ];

    private static readonly int totalWeight = rows.Sum(x => x.Weight);

    /// <summary>The shapes, by name (docs/properties.md lists them).</summary>
    public static IEnumerable<(string Name, int Weight)> Shapes => rows.Select(x => (x.Name, x.Weight));

    private static IReadOnlyList<Piece> Body(Rng r, GenOptions o, int depth, int vcpus)
    {
        if (depth >= o.MaxDepth) return [];
        int n = r.Range(0, 3);
        var list = new List<Piece>();
        for (int i = 0; i < n; i++) list.Add(RandomPiece(r, o, depth + 1, vcpus));
        return list;
    }

    public static Piece RandomPiece(Rng r, GenOptions o, int depth, int vcpus)
    {
        while (true)
        {
            int w = r.Next(totalWeight);
            foreach (var row in rows)
            {
                if (w < row.Weight)
                {
                    if (depth >= o.MaxDepth && row.Name != "instruction" && row.Name != "push-pop" && row.Name != "rip-relative") break;
                    if (row.Make(r, o, depth, vcpus) is { } p) return p;
                    break;
                }
                w -= row.Weight;
            }
        }
    }

    public static Op RandomOp(Rng r)
    {
        for (int attempt = 0; ; attempt++)
        {
            var f = r.Pick(Forms);
            bool mem = f.HasRegOrMem && (f.MemOnly || r.Chance(0.4));
            var regs = new Register[f.Slots.Length];
            long imm = 0;
            for (int i = 0; i < f.Slots.Length; i++)
            {
                var s = f.Slots[i];
                regs[i] = s.Kind switch
                {
                    SlotKind.Reg or SlotKind.RegOpcode => Pool.Random(r, s.Size),
                    SlotKind.RegOrMem when !mem => Pool.Random(r, s.Size),
                    SlotKind.Fixed => s.Fixed,
                    _ => Register.None,
                };
                if (s.Kind == SlotKind.Imm) imm = Immediate(r, s.Size);
            }
            bool address = f.Slots.Any(s => s.Kind == SlotKind.Address);
            int disp = mem || address ? r.Next((Layout.OperandBytes - 16) / 8) * 8 + (r.Chance(0.2) ? r.Next(8) : 0) : 0;
            var op = new Op(f, regs, mem, disp, imm, Lock: mem && f.CanLock && f.Slots[0].Kind == SlotKind.RegOrMem && r.Chance(0.2));
            if (op.Encodable) return op;
            if (attempt > 50) throw new InvalidOperationException($"cannot generate an encodable {f.Code}");
        }
    }

    /// <summary>A frame of 16..64 bytes and 1..4 catalog ops on it (memory forms, re-based at RSP, displacements inside the frame).</summary>
    private static StackFrame StackFrameOf(Rng r)
    {
        int bytes = 16 * r.Range(1, 4);
        var ops = new List<Op>();
        for (int i = 0, n = r.Range(1, 4); i < n; i++)
        {
            for (int attempt = 0; attempt < 20; attempt++)
            {
                var op = RandomOp(r);
                if (!op.Mem) continue;
                int width = op.Form.Slots.Where(x => x.Kind is SlotKind.RegOrMem or SlotKind.Address).Select(x => Math.Max(1, x.Size)).DefaultIfEmpty(8).Max();
                var rebased = op with { Base = Register.RSP, Disp = r.Next(Math.Max(1, bytes - Math.Max(width, 16) + 1)) };
                if (rebased.Encodable) { ops.Add(rebased); break; }
            }
        }
        return new StackFrame(bytes, ops);
    }

    private static long Immediate(Rng r, int size)
    {
        long v = r.Next(4) switch { 0 => 0, 1 => r.Range(-4, 4), 2 => (long)r.NextU64(), _ => 1L << r.Next(size * 8) };
        return size switch { 1 => (sbyte)v, 2 => (short)v, 4 => (int)v, _ => v };
    }

    private static ulong Value(Rng r) => r.Next(5) switch
    {
        0 => 0,
        1 => (ulong)r.Range(1, 255),
        2 => ulong.MaxValue - (ulong)r.Next(4),
        3 => 1UL << r.Next(64),
        _ => r.NextU64(),
    };

    /// <summary>A program: 1..MaxPieces pieces, registers, maybe a timer, vCPUs in [MinVcpus, MaxVcpus].</summary>
    public static GuestProgram Random(Rng r, GenOptions o, int size = 50)
    {
        int vcpus = r.Range(o.MinVcpus, o.MaxVcpus);
        int n = r.Range(1, Math.Max(1, Math.Min(o.MaxPieces, 1 + size * o.MaxPieces / 50)));
        var pieces = new List<Piece>();
        for (int i = 0; i < n; i++) pieces.Add(RandomPiece(r, o, 0, vcpus));
        var regs = Pool.Numbers.Select(_ => Value(r)).ToArray();
        TimerPlan? timer = o.Interrupts && r.Chance(0.7) ? new TimerPlan(r.Range(1, 800), r.Range(20, 400), r.Range(1, 4), Nest: r.Chance(0.3)) : null;
        return new GuestProgram(pieces, regs, timer, vcpus);
    }

    /// <summary>Simpler programs, for FsCheck's shrinking: fewer pieces, plainer pieces, no timer or a later one, fewer vCPUs, zero registers.</summary>
    public static IEnumerable<GuestProgram> Shrink(GuestProgram p)
    {
        var ps = p.Pieces;
        if (ps.Count > 1)
        {
            int h = ps.Count / 2;
            yield return p with { Pieces = ps.Take(h).ToArray() };
            yield return p with { Pieces = ps.Skip(h).ToArray() };
        }
        // Down to no pieces at all (the scaffolding alone can fail: a translator bug in the worker's prologue).
        for (int i = 0; i < ps.Count; i++) yield return p with { Pieces = ps.Where((_, j) => j != i).ToArray() };
        // A piece replaced by its body (a loop, branch or call around pieces becomes the pieces).
        for (int i = 0; i < ps.Count; i++)
            if (ps[i].Children.Count > 0)
                yield return p with { Pieces = [.. ps.Take(i), .. ps[i].Children, .. ps.Skip(i + 1)] };
        for (int i = 0; i < ps.Count; i++)
            foreach (var s in ps[i].Shrink())
            {
                var copy = ps.ToArray();
                copy[i] = s;
                yield return p with { Pieces = copy };
            }
        if (p.Timer is { } t)
        {
            yield return p with { Timer = null };
            if (t.Ticks > 1) yield return p with { Timer = t with { Ticks = 1 } };
            if (t.Nest) yield return p with { Timer = t with { Nest = false } };
            if (t.Delay > 1) yield return p with { Timer = t with { Delay = t.Delay / 2 } };
            if (t.Delay > 1) yield return p with { Timer = t with { Delay = t.Delay - 1 } };
        }
        if (p.Vcpus > 1) yield return p with { Vcpus = 1, Pieces = ps };
        for (int i = 0; i < p.Registers.Length; i++)
            if (p.Registers[i] != 0)
            {
                var regs = (ulong[])p.Registers.Clone();
                regs[i] = 0;
                yield return p with { Registers = regs };
            }
    }
}
