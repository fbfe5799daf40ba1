// Differential tests of the interpreter against the host CPU. See DifferentialChecker for the
// method; InstructionCatalog for what is covered; UndefinedFlags for what is masked.

using FsCheck.Xunit;
using Iced.Intel;
using Harness.Smp.Tests.Native;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

using Harness.Properties.Generators;

namespace Harness.Smp.Tests.Differential;

public class DifferentialTests(ITestOutputHelper output)
{
    // ---- random programs -------------------------------------------------------------------------

    [Property(Arbitrary = [typeof(AnyProgram)], MaxTest = 2000)]
    public void AnyMix(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(AluProgram)], MaxTest = 400)]
    public void Alu(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(ShiftProgram)], MaxTest = 500)]
    public void Shifts(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(MulDivProgram)], MaxTest = 400)]
    public void MulDiv(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(BitsProgram)], MaxTest = 400)]
    public void Bits(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(BmiProgram)], MaxTest = 600)]
    public void Bmi(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(CondProgram)], MaxTest = 300)]
    public void SetccCmov(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(MoveProgram)], MaxTest = 300)]
    public void Moves(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(AtomicProgram)], MaxTest = 300)]
    public void XaddCmpxchg(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(StringProgram)], MaxTest = 400)]
    public void Strings(DiffProgram p) => DifferentialChecker.Check(p);

    [Property(Arbitrary = [typeof(LongProgram)], MaxTest = 150)]
    public void LongMix(DiffProgram p) => DifferentialChecker.Check(p);

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
            Code.VEX_Andn_r64_r64_rm64, Code.VEX_Bextr_r32_rm32_r32, Code.VEX_Blsi_r64_rm64, Code.VEX_Blsmsk_r32_rm32, Code.VEX_Blsr_r64_rm64,
            Code.VEX_Bzhi_r64_rm64_r64, Code.VEX_Mulx_r64_r64_rm64, Code.VEX_Pdep_r32_r32_rm32, Code.VEX_Pext_r64_r64_rm64,
            Code.VEX_Rorx_r64_rm64_imm8, Code.VEX_Sarx_r32_rm32_r32, Code.VEX_Shlx_r64_rm64_r64, Code.VEX_Shrx_r32_rm32_r32,
            Code.Movbe_r16_m16, Code.Movbe_m64_r64, Code.Adcx_r64_rm64, Code.Adox_r32_rm32,
            Code.Movsq_m64_m64, Code.Stosw_m16_AX, Code.Lodsb_AL_m8, Code.Cmpsd_m32_m32, Code.Scasq_RAX_m64, Code.Mov_r64_imm64,
        ];
        var have = InstructionCatalog.All.Select(x => x.Code).ToHashSet();
        Assert.All(expected.Where(c => InstructionCatalog.HostSupports(c.Mnemonic())), c => Assert.Contains(c, have));
    }

    /// <summary>
    /// Guards the generator's usefulness: most generated instructions must really be compared (not cut
    /// off by a predicted #DE or a read of an undefined flag), and every family must be exercised.
    /// </summary>
    [Fact]
    public void MostGeneratedInstructionsAreCompared()
    {
        var rng = new Rng(12345);
        int executed = 0, total = 0, divideErrors = 0;
        var reasons = new Dictionary<string, int>();
        for (int i = 0; i < 300; i++)
        {
            var p = ProgramGen.RandomProgram(rng, ProgramArbitrary.MaxSteps);
            var o = DifferentialChecker.Check(p);
            executed += o.Executed;
            total += o.Total;
            if (o.DivideError) divideErrors++;
            string key = o.CutReason is null ? "-" : System.Text.RegularExpressions.Regex.Replace(o.CutReason, "undefined .*", "undefined state");
            reasons[key] = reasons.GetValueOrDefault(key) + 1;
        }
        output.WriteLine($"compared {executed}/{total} instructions ({100.0 * executed / total:F1}%), {divideErrors} programs end in #DE");
        foreach (var (k, v) in reasons) output.WriteLine($"  cut reason {k}: {v}");
        Assert.True(executed > total * 0.6, $"only {executed} of {total} generated instructions were compared");
    }

    /// <summary>Cross-checks the UndefinedFlags table against Iced's per-instruction flag info (value-independent rows).</summary>
    [Fact]
    public void UndefinedFlagTableAgreesWithIced()
    {
        var problems = new List<string>();
        foreach (var form in InstructionCatalog.All)
        {
            if (form.Family is Family.Shift or Family.String) continue; // count- or rcx-dependent: covered by the table's code
            var ins = ProgramGen.Instructions(ProgramGen.RandomStep(new Rng(1), form)).Last().Ins;
            var state = new NativeState();
            state.Gpr[0] = 1; state.Gpr[1] = 1; state.Gpr[3] = 1; state.Gpr[15] = DiffProgram.Base; // non-zero sources, no #DE
            for (int i = 0; i < 16; i++) if (i != 15) state.Gpr[i] = 1;
            var scratch = Enumerable.Repeat((byte)1, NativeRunner.ScratchSize).ToArray();
            var e = UndefinedFlags.Evaluate(ins, state, scratch);
            ulong icedModified = DifferentialChecker.X86Flags(ins.RflagsModified) & UndefinedFlags.All6;
            ulong icedUndefined = DifferentialChecker.X86Flags(ins.RflagsUndefined) & UndefinedFlags.All6;
            if ((e.Defined | e.Undefined) != icedModified)
                problems.Add($"{form.Code}: table writes {DiffProgram.FlagText(e.Defined | e.Undefined)}, Iced says {DiffProgram.FlagText(icedModified)}");
            if (e.Undefined != icedUndefined)
                problems.Add($"{form.Code}: table undefined {DiffProgram.FlagText(e.Undefined)}, Iced says {DiffProgram.FlagText(icedUndefined)}");
        }
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    // ---- readable regression vectors -------------------------------------------------------------

    static DiffProgram Single(Instruction ins, ulong flags, params (int reg, ulong value)[] regs) => Steps([ins], flags, regs);

    internal static DiffProgram Steps(Instruction[] steps, ulong flags, params (int reg, ulong value)[] regs)
    {
        var r = new ulong[16];
        foreach (var (reg, v) in regs) r[reg] = v;
        // Hand-written steps: the operands come straight from each instruction.
        Step Make(Instruction ins) => new(InstructionCatalog.All.Single(f => f.Code == ins.Code),
            Enumerable.Range(0, ins.OpCount).Select(i => ins.GetOpKind(i) == OpKind.Register ? ins.GetOpRegister(i) : Register.None).ToArray(),
            Mem: false, Disp: 0, Imm: ins.OpCount > 1 && ins.GetOpKind(ins.OpCount - 1) != OpKind.Register ? (long)ins.GetImmediate(ins.OpCount - 1) : 0,
            Lock: false, Rep: RepPrefixKind.None, Address: null, SetupA: 0, SetupB: 0, SetupC: -1);
        return new DiffProgram { Regs = r, Flags = flags, ScratchSeed = 0, Steps = steps.Select(Make).ToArray() };
    }

    [Fact]
    public void RotateThroughCarryByAMultipleOfNinePassesAnUndefinedCarryThrough()
    {
        // Found by Shifts (about 1 in 100,000 programs): shld of 16 bits by 26 leaves CF undefined;
        // rcr bl,27 rotates by 27 mod 9 = 0, so CF keeps that undefined value and must stay masked.
        var shld = Instruction.Create(Code.Shld_rm16_r16_CL, Register.SI, Register.R13W, Register.CL);
        var rcr = Instruction.Create(Code.Rcr_rm8_imm8, Register.BL, 0x1B);
        DifferentialChecker.Check(Steps([shld, rcr], 0, (1, 0x5a), (13, 0x64)));
        Assert.Equal(0UL, UndefinedFlags.Evaluate(rcr, new NativeState(), new byte[NativeRunner.ScratchSize]).Defined & NativeState.CF);
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
        // The immediate form: a count of 32 masks to 0 (the specialized handlers read the count by form).
        foreach (var code in new[] { Code.Shl_rm32_imm8, Code.Shr_rm32_imm8, Code.Sar_rm32_imm8 })
            DifferentialChecker.Check(Single(Instruction.Create(code, Register.EBX, 32), NativeState.CF | NativeState.OF | NativeState.ZF,
                (3, 0xFFFF_FFFF_8000_0001)));
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

    [Theory]
    [InlineData(Code.Idiv_rm8, 0xFF80UL, 0UL, 0xFFUL)]                                   // -128 / -1 = 128: overflow
    [InlineData(Code.Idiv_rm16, 0x8000UL, 0xFFFFUL, 0xFFFFUL)]                            // -32768 / -1
    [InlineData(Code.Idiv_rm32, 0x8000_0000UL, 0xFFFF_FFFFUL, 0xFFFF_FFFFUL)]             // -2^31 / -1
    [InlineData(Code.Idiv_rm64, 0UL, 0x8000_0000_0000_0000UL, ulong.MaxValue)]            // -2^127 / -1
    [InlineData(Code.Idiv_rm64, 0x8000_0000_0000_0000UL, ulong.MaxValue, ulong.MaxValue)] // -2^63 / -1
    [InlineData(Code.Idiv_rm64, 0x8000_0000_0000_0000UL, ulong.MaxValue, 1UL)]            // -2^63 / 1: fits
    [InlineData(Code.Idiv_rm32, 0x7FFF_FFFFUL, 0UL, 1UL)]                                 // 2^31-1 / 1: fits
    [InlineData(Code.Div_rm64, ulong.MaxValue, 0xFFFF_FFFF_FFFF_FFFEUL, ulong.MaxValue)]  // largest quotient that fits
    [InlineData(Code.Div_rm8, 0xFFFFUL, 0UL, 0xFFUL)]                                     // 65535 / 255 = 257: overflow
    public void DivideEdges(Code code, ulong rax, ulong rdx, ulong divisor)
    {
        var size = InstructionCatalog.All.Single(f => f.Code == code).Slots[0].Size;
        var p = Single(Instruction.Create(code, ProgramGen.Gpr(3, size)), 0, (0, rax), (2, rdx), (3, divisor));
        DifferentialChecker.Check(p);
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
