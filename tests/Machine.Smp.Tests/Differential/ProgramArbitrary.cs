// FsCheck generators and shrinkers for DiffProgram. Generation draws a seed and builds the program
// with the deterministic Rng (so the same builder serves the exhaustive per-encoding test); the
// shrinker works on the program's data: fewer steps, plainer operands, zero inputs.

using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;

using Harness.Properties.Generators;

namespace Harness.Smp.Tests.Differential;

public static class ProgramArbitrary
{
    public const int MaxSteps = 8;

    public static Arbitrary<DiffProgram> For(params Family[] families) => For(MaxSteps, families);

    public static Arbitrary<DiffProgram> For(int maxSteps, params Family[] families) =>
        Arb.From(
            Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed =>
                ProgramGen.RandomProgram(new Rng((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)size), Math.Clamp(1 + size * maxSteps / 50, 1, maxSteps), families))),
            Shrink);

    public static IEnumerable<DiffProgram> Shrink(DiffProgram p) => Candidates(p).Where(c => c.IsEncodable());

    static IEnumerable<DiffProgram> Candidates(DiffProgram p)
    {
        var steps = p.Steps;
        // Fewer steps: halves first, then each single step.
        if (steps.Count > 1)
        {
            int h = steps.Count / 2;
            yield return p.With(steps: steps.Take(h).ToArray());
            yield return p.With(steps: steps.Skip(h).ToArray());
            for (int i = 0; i < steps.Count; i++)
                yield return p.With(steps: steps.Where((_, j) => j != i).ToArray());
        }
        // Plainer steps.
        for (int i = 0; i < steps.Count; i++)
            foreach (var s in SimplerSteps(steps[i]))
            {
                var copy = steps.ToArray();
                copy[i] = s;
                yield return p.With(steps: copy);
            }
        // Simpler inputs.
        if (p.ScratchSeed != 0) yield return p.With(scratchSeed: 0);
        if (p.Flags != 0) yield return p.With(flags: 0);
        for (int i = 0; i < 16; i++)
        {
            if (i is DiffProgram.Rsp or DiffProgram.R15 || p.Regs[i] == 0) continue;
            foreach (var v in new[] { 0UL, p.Regs[i] & 0xFF, p.Regs[i] & 0xFFFF_FFFF }.Distinct())
            {
                if (v == p.Regs[i]) continue;
                var r = (ulong[])p.Regs.Clone();
                r[i] = v;
                yield return p.With(regs: r);
            }
        }
    }

    static IEnumerable<Step> SimplerSteps(Step s)
    {
        if (s.Lock) yield return s with { Lock = false };
        if (s.HasIndex) yield return s with { Index = Register.None, Scale = 1, SetupB = 0 };
        if (s.Rep != RepPrefixKind.None) yield return s with { Rep = RepPrefixKind.None, SetupC = -1 };
        if (s.SetupC > 1) yield return s with { SetupC = s.SetupC / 2 };
        if (s.Mem && !InstructionCatalog.KnownUnsupported.Contains(s.Form.Code))
        {
            // The register form of the same encoding: rbx-sized register where the memory operand was.
            var regs = (Register[])s.Regs.Clone();
            int i = Array.FindIndex(s.Form.Slots, x => x.Kind == SlotKind.RegOrMem);
            regs[i] = ProgramGen.Gpr(3, s.Form.Slots[i].Size);
            yield return s with { Mem = false, Regs = regs, Disp = 0, SetupA = s.IsBtMemRegOffset ? 0 : s.SetupA, Index = Register.None, SetupB = 0 };
        }
        if (s.Disp != 0 && !s.IsBtMemRegOffset) yield return s with { Disp = 0 };
        if (s.Form.Slots.Any(x => x.Kind == SlotKind.Imm && !x.ConstOne))
        {
            foreach (var v in new long[] { 0, 1, s.Imm / 2 }.Distinct())
                if (v != s.Imm && Math.Abs(v) < Math.Abs(s.Imm)) yield return s with { Imm = v };
        }
        if (s.SetupA != 0 && (s.IsBtMemRegOffset || s.Form.Family == Family.String || s.Form.Mnemonic == Mnemonic.Cmpxchg)) yield return s with { SetupA = 0 };
        if (s.SetupB != 0 && s.Form.Family == Family.String) yield return s with { SetupB = 0 };
    }
}

// One Arbitrary holder per family, for [Property(Arbitrary = ...)].
public static class AnyProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(); }
public static class AluProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.Alu); }
public static class ShiftProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.Shift); }
public static class MulDivProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.MulDiv); }
public static class BitsProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.Bits); }
public static class BmiProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.Bmi); }
public static class CondProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.Cond, Family.Alu); }
public static class MoveProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.Move); }
public static class AtomicProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.Atomic, Family.Alu); }
/// <summary>Up to 40 steps: longer than a decoded block (48 instructions), so lazy flags and state cross block boundaries.</summary>
public static class LongProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(40); }
public static class StringProgram { public static Arbitrary<DiffProgram> Programs() => ProgramArbitrary.For(Family.String); }
