using Harness.Smp.Cpu;
using Harness.Properties.Generators;
using Harness.Properties.Run;
using Iced.Intel;
using Xunit;

namespace Harness.Properties.Tests;

/// <summary>
/// The generators: every shape of the table is generated, every program (and every shrink of one) is
/// well formed (it runs natively to exit 0: a program that does not is the generator's bug, which
/// the properties would report as such), and the translator paths the properties are about are
/// reached: each jumptable form, level-1 conflicts and level-2 probes, exception-table fixups, the
/// dispatcher exit, entry paths.
/// </summary>
public class GeneratorTests
{
    private static IEnumerable<GuestProgram> Programs(int n, GenOptions o, ulong seed = 1) =>
        Enumerable.Range(0, n).Select(i => ProgramGen.Random(new Rng(seed * 1_000_003 + (ulong)i), o));

    private static IEnumerable<Piece> All(IEnumerable<Piece> ps) => ps.SelectMany(p => All(p.Children).Prepend(p));

    [Fact]
    public void EveryShapeAndEveryCallAndLoopFormIsGenerated()
    {
        var pieces = Programs(1500, GenOptions.Default with { MaxVcpus = 4 }).SelectMany(p => All(p.Pieces)).ToList();
        var types = pieces.Select(p => p.GetType().Name).ToHashSet();
        foreach (var t in new[] { nameof(Op), nameof(PushPop), nameof(RipRelative), nameof(SharedAdd), nameof(Bracket), nameof(Skip), nameof(Repeat), nameof(Call), nameof(Fault), nameof(AliasedCalls), nameof(StackFrame), nameof(SharedPlain), nameof(Jump) })
            Assert.Contains(t, types);
        foreach (var k in Enum.GetValues<CallKind>()) Assert.Contains(pieces.OfType<Call>(), c => c.Kind == k);
        foreach (var k in Enum.GetValues<LoopKind>()) Assert.Contains(pieces.OfType<Repeat>(), c => c.Kind == k);
        Assert.Contains(pieces.OfType<Bracket>(), b => b.InterruptsOff);
        Assert.Contains(pieces.OfType<Fault>(), f => f.Store);
        foreach (int size in new[] { 1, 2, 4, 8 }) Assert.Contains(pieces.OfType<RipRelative>(), r => r.Size == size);
        // Every register of the pool is the target of an indirect call.
        foreach (int n in Pool.Numbers) Assert.Contains(pieces.OfType<Call>(), c => c.Kind == CallKind.Register && c.Reg.GetFullRegister().GetNumber() == n);
        // Catalog instructions of every family the generator admits.
        var families = pieces.OfType<Op>().Select(o => o.Form.Family).ToHashSet();
        foreach (var f in ProgramGen.Forms.Select(f => f.Family).Distinct()) Assert.Contains(f, families);
    }

    [Fact]
    public void GeneratedProgramsRunNativelyToExitZero()
    {
        foreach (var p in Programs(120, GenOptions.Default with { MaxVcpus = 4 }, seed: 2))
        {
            var r = ProgramRunner.Run(p, new RunSpec());
            Assert.True(r.Result.Reason == StopReason.Exited && r.Result.ExitStatus == 0, $"{r.Result.Reason} {r.Result.ExitStatus}: {r.Result.Message}\n{p}");
            Assert.Equal(p.Timer?.Ticks ?? 0, (int)r.Word(Layout.Private(0) + Layout.Ticks));
        }
    }

    [Fact]
    public void EveryShrinkOfAProgramIsWellFormed()
    {
        int checkedShrinks = 0;
        foreach (var p in Programs(6, GenOptions.Default with { MaxVcpus = 2 }, seed: 3))
            foreach (var s in ProgramGen.Shrink(p).Take(40))
            {
                var r = ProgramRunner.Run(s, new RunSpec());
                Assert.True(r.Result.Reason == StopReason.Exited && r.Result.ExitStatus == 0, $"a shrink did not run: {r.Result.Message}\n{s}");
                // Plainer may be one longer (loop -> dec; jnz), never more, and never back (no cycles).
                Assert.True(s.Image.PieceInstructions <= p.Image.PieceInstructions + 1,
                    $"a shrink grew the program: {p.Image.PieceInstructions} -> {s.Image.PieceInstructions}");
                checkedShrinks++;
            }
        Assert.True(checkedShrinks > 100);
    }

    [Fact]
    public void AProbeAtAnyPointLeavesTheNativeResultUnchanged()
    {
        // The probe handler is position-independent: where it lands does not change the final state.
        foreach (var p in Programs(20, GenOptions.Default, seed: 4))
        {
            var early = ProgramRunner.Run(p, new RunSpec { Events = [new HostEvent(0, HostAction.Probe)] });
            var late = ProgramRunner.Run(p, new RunSpec { Events = [new HostEvent(early.MaxRetired / 2, HostAction.Probe)] });
            Assert.Equal(1UL, early.Word(Layout.Private(0) + Layout.Probes));
            Assert.True(StateDiff.Compare(p, early, "early", late, "late") is null, $"{StateDiff.Compare(p, early, "early", late, "late")}\n{late.Result.Message}\n{p}");
        }
    }

    [Fact]
    public void TheTranslatorPathsThePropertiesAreAboutAreReached()
    {
        long l1Hits = 0, l2Hits = 0, misses = 0, indirect = 0, faults = 0, entries = 0;
        var kinds = new HashSet<string>();
        foreach (var p in Programs(60, GenOptions.Default, seed: 5))
        {
            var r = ProgramRunner.Run(p, new RunSpec { Configuration = "no-callret", Prof = true });
            Assert.Equal(StopReason.Exited, r.Result.Reason);
            var c = r.Prof!.Value;
            (l1Hits, l2Hits, misses, indirect, entries) = (l1Hits + c.Level1Hits, l2Hits + c.Level2Hits, misses + c.JumpTableMisses, indirect + c.IndirectBranches, entries + c.DispatcherEntries);
            faults += (long)r.Word(Layout.Private(0) + Layout.Faults);
        }
        foreach (var p in Programs(12, GenOptions.Default with { Faults = false }, seed: 6))
        {
            var t = ProgramRunner.Run(p, new RunSpec { Configuration = "default", Trace = true, Events = [new HostEvent(0, HostAction.Probe)] });
            foreach (var x in t.Trace!) kinds.Add(x.Kind);
        }
        Assert.True(l1Hits > 0 && l2Hits > 0 && misses > 0 && faults > 0 && entries > 0,
            $"level-1 hits {l1Hits}, level-2 hits {l2Hits}, misses {misses}, indirect {indirect}, faults fixed {faults}, dispatcher entries {entries}");
        foreach (var k in new[] { "exit stub: popfq", "exit stub: jmp", "edge stub", "entry path", "indirect-call", "indirect-jmp", "iretq", "level-2 routine", "direct-call" })
            Assert.True(kinds.Contains(k), $"no traced boundary in {k}: {string.Join(", ", kinds.Order())}");
    }

    [Theory]
    [InlineData("12,34", "expected (seed,gamma)")]
    [InlineData("(12,34)", "must be odd")]
    [InlineData("(12,x5)", "gamma 'x5'")]
    [InlineData("(-1,5)", "seed '-1'")]
    [InlineData("(1,3,4,5)", "got 4")]
    [InlineData("(1,3,big)", "size 'big'")]
    [InlineData("(18446744073709551616,3)", "not an unsigned 64-bit")]
    public void AMalformedReplaySeedIsRefusedNamingThePart(string text, string message)
    {
        var e = Assert.Throws<FormatException>(() => ReplaySeed.Parse(text));
        Assert.Contains(message, e.Message);
        Assert.Contains(text, e.Message);
    }

    [Fact]
    public void ReplaySeedsRoundTrip()
    {
        Assert.Equal(new ReplaySeed(12, 35), ReplaySeed.Parse(" (12, 35) "));
        Assert.Equal(new ReplaySeed(12, 35, 7), ReplaySeed.Parse("(12,35,7)"));
        Assert.Equal("(12,35,7)", new ReplaySeed(12, 35, 7).ToString());
    }
}
