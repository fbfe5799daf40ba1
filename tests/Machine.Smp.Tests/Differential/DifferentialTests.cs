// Differential tests of the interpreter against the host CPU. See DifferentialChecker for the
// method; InstructionCatalog for what is covered; UndefinedFlags for what is masked.

using FsCheck.Xunit;
using Iced.Intel;
using Harness.Machine.Cpu;
using Harness.Machine.Tests.Native;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Harness.Machine.Tests.Differential;

public class DifferentialTests(ITestOutputHelper output)
{
    // ---- random programs -------------------------------------------------------------------------

    [Property(Arbitrary = [typeof(AnyProgram)], MaxTest = 300)]
    public void AnyMix(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(AluProgram)], MaxTest = 150)]
    public void Alu(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(ShiftProgram)], MaxTest = 200)]
    public void Shifts(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(MulDivProgram)], MaxTest = 150)]
    public void MulDiv(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(BitsProgram)], MaxTest = 150)]
    public void Bits(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(CondProgram)], MaxTest = 150)]
    public void SetccCmov(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(MoveProgram)], MaxTest = 150)]
    public void Moves(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(AtomicProgram)], MaxTest = 100)]
    public void XaddCmpxchg(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(StringProgram)], MaxTest = 150)]
    public void Strings(DiffProgram p) => DifferentialChecker.Check(p);

    // ---- every encoding, deterministically -------------------------------------------------------

    /// <summary>Every catalog encoding, several times each (register and memory variants), as one-step programs.</summary>
    [Fact]
    public void EveryEncoding()
    {
        var failures = new List<string>();
        int runs = 0;
        foreach (var form in InstructionCatalog.All)
        {
            var rng = new Rng((ulong)form.Code * 7919);
            for (int k = 0; k < 6; k++)
            {
                var step = ProgramGen.RandomStep(rng, form);
                var p = ProgramGen.RandomInput(rng, [step]);
                runs++;
                try { DifferentialChecker.Check(p); }
                catch (XunitException e) { failures.Add($"{form.Code}: {e.Message}"); break; }
            }
        }
        output.WriteLine($"{runs} runs over {InstructionCatalog.All.Count} encodings");
        Assert.True(failures.Count == 0, $"{failures.Count} encodings differ:{Environment.NewLine}{string.Join(Environment.NewLine + new string('-', 60) + Environment.NewLine, failures.Take(12))}");
    }

    /// <summary>
    /// Ratchet for InstructionCatalog.KnownUnsupported: the register forms still stop as unsupported.
    /// When this fails the emulator learnt them: delete them from the list so they get generated.
    /// </summary>
    [Fact]
    public void KnownUnsupportedFormsStillFail()
    {
        foreach (var code in InstructionCatalog.KnownUnsupported)
        {
            var form = InstructionCatalog.All.Single(f => f.Code == code);
            int size = form.Slots[0].Size;
            var step = new Step(form, [ProgramGen.Gpr(0, size), ProgramGen.Gpr(3, size), Register.CL], false, 0, 0, false,
                RepPrefixKind.None, null, 0, 0, -1);
            var p = new DiffProgram { Regs = new ulong[16], Flags = 0, ScratchSeed = 0, Steps = [step] };
            var emu = EmulatorRunner.Run(DiffProgram.Code(p.Lines, p.Lines.Count), p.Input(), p.Scratch());
            Assert.True(emu.Run.Reason == StopReason.Unsupported, $"{code} now runs ({emu.Run.Reason}): remove it from InstructionCatalog.KnownUnsupported");
        }
    }

    [Fact]
    public void CatalogCoversEveryFamily()
    {
        foreach (var f in Enum.GetValues<Family>())
        {
            var forms = InstructionCatalog.Of(f);
            output.WriteLine($"{f,-7} {forms.Count,4} encodings: {string.Join(' ', forms.Select(x => x.Code))}");
            Assert.NotEmpty(forms);
        }
        // Spot checks that the Iced enumeration picked up the forms the brief lists.
        Code[] expected =
        [
            Code.Adc_AL_imm8, Code.Add_rm64_imm32, Code.Sbb_r16_rm16, Code.Test_rm8_imm8, Code.Neg_rm32, Code.Not_rm64,
            Code.Shld_rm16_r16_CL, Code.Shrd_rm64_r64_imm8, Code.Rcl_rm8_1, Code.Sar_rm32_CL, Code.Rol_rm16_imm8,
            Code.Imul_r64_rm64_imm32, Code.Imul_r16_rm16, Code.Idiv_rm8, Code.Mul_rm64,
            Code.Bt_rm16_r16, Code.Btc_rm64_imm8, Code.Bsr_r32_rm32, Code.Tzcnt_r64_rm64, Code.Lzcnt_r16_rm16, Code.Popcnt_r32_rm32,
            Code.Setle_rm8, Code.Cmovnp_r32_rm32, Code.Movsx_r64_rm8, Code.Movzx_r32_rm16, Code.Movsxd_r64_rm32, Code.Lea_r32_m,
            Code.Xchg_r64_RAX, Code.Xadd_rm8_r8, Code.Cmpxchg_rm64_r64, Code.Bswap_r64, Code.Cqo, Code.Cbw,
            Code.Movsq_m64_m64, Code.Stosw_m16_AX, Code.Lodsb_AL_m8, Code.Cmpsd_m32_m32, Code.Scasq_RAX_m64, Code.Mov_r64_imm64,
        ];
        var have = InstructionCatalog.All.Select(x => x.Code).ToHashSet();
        Assert.All(expected, c => Assert.Contains(c, have));
    }

    // ---- readable regression vectors -------------------------------------------------------------

    static DiffProgram Single(Instruction ins, ulong flags, params (int reg, ulong value)[] regs)
    {
        var form = InstructionCatalog.All.Single(f => f.Code == ins.Code);
        var r = new ulong[16];
        foreach (var (reg, v) in regs) r[reg] = v;
        // A hand-written step: the operands come straight from ins.
        var step = new Step(form, Enumerable.Range(0, ins.OpCount).Select(i => ins.GetOpKind(i) == OpKind.Register ? ins.GetOpRegister(i) : Register.None).ToArray(),
            Mem: false, Disp: 0, Imm: ins.OpCount > 1 && ins.GetOpKind(ins.OpCount - 1) != OpKind.Register ? (long)ins.GetImmediate(ins.OpCount - 1) : 0,
            Lock: false, Rep: RepPrefixKind.None, Address: null, SetupA: 0, SetupB: 0, SetupC: -1);
        return new DiffProgram { Regs = r, Flags = flags, ScratchSeed = 0, Steps = [step] };
    }

    [Fact]
    public void AdcAlWithCarryIn()
    {
        // 0x01 + 0x7f + CF: signed overflow into 0x81, AF from the low nibble, CF clear.
        var p = Single(Instruction.Create(Code.Adc_AL_imm8, Register.AL, 0x7f), NativeState.CF, (0, 0x1122_3344_5566_7701));
        DifferentialChecker.Check(p);
        var (exp, _, _, _) = DifferentialChecker.Predict(p);
        Assert.Equal(0x1122_3344_5566_7781UL, exp.State.Gpr[0]);
        Assert.Equal(NativeState.OF | NativeState.SF | NativeState.AF | NativeState.PF, exp.State.Rflags & UndefinedFlags.All6);
    }

    [Fact]
    public void ShiftByZeroKeepsFlagsAndThirtyTwoBitFormZeroExtends()
    {
        var p = Single(Instruction.Create(Code.Shl_rm32_CL, Register.EBX, Register.CL), NativeState.CF | NativeState.OF | NativeState.ZF,
            (1, 0x100), (3, 0xFFFF_FFFF_8000_0001));
        DifferentialChecker.Check(p);
    }

    [Fact]
    public void CmovFalseConditionStillZeroExtends()
    {
        var p = Single(Instruction.Create(Code.Cmovb_r32_rm32, Register.EDX, Register.ESI), 0, (2, 0xDEAD_BEEF_0000_0001), (6, 5));
        DifferentialChecker.Check(p);
    }

    [Fact]
    public void DivideOverflowRaisesDivideError()
    {
        // rdx:rax / 1 with rdx != 0 overflows the quotient: #DE, checked without running it natively.
        var p = Single(Instruction.Create(Code.Div_rm64, Register.RBX), 0, (0, 5), (2, 1), (3, 1));
        var outcome = DifferentialChecker.Check(p);
        Assert.True(outcome.DivideError);
    }

    // ---- the checker can fail --------------------------------------------------------------------

    [Fact]
    public void PlantedBugsAreReported()
    {
        var p = Single(Instruction.Create(Code.Add_rm64_r64, Register.RBX, Register.RCX), 0, (3, ulong.MaxValue), (1, 1));
        var (exp, _, _, _) = DifferentialChecker.Predict(p);
        var emu = EmulatorRunner.Run(DiffProgram.Code(p.Lines, p.Lines.Count), p.Input(), p.Scratch());
        DifferentialChecker.AssertStateEqual(exp, emu.State, emu.Scratch, p.ToString()); // agrees

        var flipped = exp with { State = exp.State.Clone() };
        flipped.State.Rflags ^= NativeState.CF;
        var e1 = Assert.Throws<XunitException>(() => DifferentialChecker.AssertStateEqual(flipped, emu.State, emu.Scratch, p.ToString()));
        Assert.Matches(@"CF\s+0\s+1\s+<-- differs", e1.Message);

        var perturbed = exp with { State = exp.State.Clone() };
        perturbed.State.Gpr[3] ^= 0x40;
        var e2 = Assert.Throws<XunitException>(() => DifferentialChecker.AssertStateEqual(perturbed, emu.State, emu.Scratch, p.ToString()));
        Assert.Contains("rbx", e2.Message);
        Assert.Contains("<-- differs", e2.Message);

        var memory = exp with { Scratch = (byte[])exp.Scratch.Clone() };
        memory.Scratch[0x810] ^= 1;
        var e3 = Assert.Throws<XunitException>(() => DifferentialChecker.AssertStateEqual(memory, emu.State, emu.Scratch, p.ToString()));
        Assert.Contains("[scratch+0x810]", e3.Message);

        // A masked (undefined) flag is not reported.
        var masked = flipped with { UndefinedFlags = NativeState.CF };
        DifferentialChecker.AssertStateEqual(masked, emu.State, emu.Scratch, p.ToString());
    }
}
