// The block compiler against the host CPU: the differential generators of Differential/ run with
// every block compiled before its first run (BlockCompilation.Always), so each generated
// instruction goes through its compile rule (or its handler, called from compiled code) instead of
// the interpreter loop. A planted compiler bug shows the check fails.

using FsCheck.Xunit;
using Harness.Smp.Compile;
using Harness.Smp.Tests.Differential;
using Harness.Properties.Generators;
using Iced.Intel;
using Xunit;
using Xunit.Sdk;

namespace Harness.Smp.Tests.Compile;

public class CompiledDifferentialTests
{
    private static void Check(DiffProgram p) => DifferentialChecker.Check(p, BlockCompilation.Always);

    [Property(Arbitrary = [typeof(AnyProgram)], MaxTest = 1000)]
    public void AnyMix(DiffProgram p) => Check(p);

    [Property(Arbitrary = [typeof(AluProgram)], MaxTest = 400)]
    public void Alu(DiffProgram p) => Check(p);

    [Property(Arbitrary = [typeof(ShiftProgram)], MaxTest = 300)]
    public void Shifts(DiffProgram p) => Check(p);

    [Property(Arbitrary = [typeof(MulDivProgram)], MaxTest = 300)]
    public void MulDiv(DiffProgram p) => Check(p);

    [Property(Arbitrary = [typeof(CondProgram)], MaxTest = 400)]
    public void SetccCmov(DiffProgram p) => Check(p);

    [Property(Arbitrary = [typeof(MoveProgram)], MaxTest = 300)]
    public void Moves(DiffProgram p) => Check(p);

    [Property(Arbitrary = [typeof(LongProgram)], MaxTest = 150)]
    public void LongMix(DiffProgram p) => Check(p);

    /// <summary>Every catalog encoding once, compiled: each rule (and each handler call) meets the host CPU at least once.</summary>
    [Fact]
    public void EveryEncodingCompiled()
    {
        var failures = new List<string>();
        foreach (var form in InstructionCatalog.All)
        {
            var rng = new Rng((ulong)form.Code * 7919);
            var p = ProgramGen.RandomInput(rng, [ProgramGen.RandomStep(rng, form)]);
            try { Check(p); }
            catch (XunitException e) { failures.Add($"{form.Code}: {e.Message}"); }
        }
        Assert.True(failures.Count == 0, string.Join("\n\n", failures.Take(5)) + $"\n({failures.Count} encodings failed)");
    }

    /// <summary>The compiled condition after cmp: jb, setb and cmovb read the carry the compare left.</summary>
    private static DiffProgram BelowProgram() => DifferentialTests.Steps(
        [
            Instruction.Create(Code.Cmp_rm64_r64, Register.RAX, Register.RBX),
            Instruction.Create(Code.Setb_rm8, Register.CL),
            Instruction.Create(Code.Cmovb_r64_rm64, Register.RDX, Register.RBX),
        ], 0, (0, 3), (3, 5));

    [Fact]
    public void BelowAfterCompareAgreesWithTheHost() => Check(BelowProgram());

    [Fact]
    public void PlantedConditionBugIsCaught()
    {
        var e = Assert.Throws<XunitException>(() => DifferentialChecker.Check(BelowProgram(), BlockCompilation.Always, CompilerPlant.BelowIsAbove));
        Assert.Contains("differs", e.Message);
    }
}
