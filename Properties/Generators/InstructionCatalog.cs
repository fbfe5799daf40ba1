// The instruction encodings the differential tests (tests/Machine.Smp.Tests/Differential, which link
// this file) and the translator properties (Properties/) generate, enumerated as data from Iced's opcode
// tables: every legacy-encoded 64-bit-mode Code whose mnemonic belongs to one of the families below
// and whose operands the generator knows how to fill (GPRs, r/m, immediates, implicit registers,
// string operands). New forms Iced knows about are picked up automatically.

using Iced.Intel;

namespace Harness.Properties.Generators;

public enum Family { Alu, Shift, MulDiv, Bits, Cond, Move, Atomic, String, Flag, Bmi }

/// <summary>How the generator fills one operand.</summary>
public enum SlotKind
{
    /// <summary>r/m: a register or a [r15+disp] memory operand.</summary>
    RegOrMem,
    /// <summary>A register only (modrm.reg, modrm.rm register-only, or the opcode's low bits).</summary>
    Reg,
    /// <summary>A register that must be encodable in the opcode's low bits (same as Reg for us).</summary>
    RegOpcode,
    /// <summary>lea's address operand: any base/index/scale/displacement, never accessed.</summary>
    Address,
    /// <summary>moffs: an absolute 64-bit address inside the scratch page.</summary>
    MemOffs,
    Imm,
    /// <summary>An implicit register named by the opcode (al, cl, ax, eax, rax).</summary>
    Fixed,
    /// <summary>String operands [rsi] / [rdi]: built with Iced's string helpers.</summary>
    String,
}

/// <summary>MemOnly: a RegOrMem slot whose encoding has no register form (movbe's m16/m32/m64).</summary>
public readonly record struct Slot(SlotKind Kind, int Size, OpKind ImmKind = OpKind.Register, Register Fixed = Register.None, bool ConstOne = false, bool MemOnly = false);

public sealed record Form(Code Code, Mnemonic Mnemonic, Family Family, Slot[] Slots, bool CanLock)
{
    public bool HasRegOrMem => Slots.Any(s => s.Kind == SlotKind.RegOrMem);
    public bool MemOnly => Slots.Any(s => s.MemOnly);
    public override string ToString() => Code.ToString();
}

public static class InstructionCatalog
{
    static readonly Dictionary<Mnemonic, Family> Families = BuildFamilies();

    static Dictionary<Mnemonic, Family> BuildFamilies()
    {
        var d = new Dictionary<Mnemonic, Family>();
        void Add(Family f, params Mnemonic[] ms) { foreach (var m in ms) d[m] = f; }
        Add(Family.Alu, Mnemonic.Add, Mnemonic.Or, Mnemonic.Adc, Mnemonic.Sbb, Mnemonic.And, Mnemonic.Sub, Mnemonic.Xor,
            Mnemonic.Cmp, Mnemonic.Test, Mnemonic.Inc, Mnemonic.Dec, Mnemonic.Neg, Mnemonic.Not);
        Add(Family.Shift, Mnemonic.Rol, Mnemonic.Ror, Mnemonic.Rcl, Mnemonic.Rcr, Mnemonic.Shl, Mnemonic.Sal, Mnemonic.Sar,
            Mnemonic.Shr, Mnemonic.Shld, Mnemonic.Shrd);
        Add(Family.MulDiv, Mnemonic.Mul, Mnemonic.Imul, Mnemonic.Div, Mnemonic.Idiv);
        Add(Family.Bits, Mnemonic.Bt, Mnemonic.Bts, Mnemonic.Btr, Mnemonic.Btc, Mnemonic.Bsf, Mnemonic.Bsr,
            Mnemonic.Tzcnt, Mnemonic.Lzcnt, Mnemonic.Popcnt);
        Add(Family.Cond, Mnemonic.Seto, Mnemonic.Setno, Mnemonic.Setb, Mnemonic.Setae, Mnemonic.Sete, Mnemonic.Setne,
            Mnemonic.Setbe, Mnemonic.Seta, Mnemonic.Sets, Mnemonic.Setns, Mnemonic.Setp, Mnemonic.Setnp,
            Mnemonic.Setl, Mnemonic.Setge, Mnemonic.Setle, Mnemonic.Setg,
            Mnemonic.Cmovo, Mnemonic.Cmovno, Mnemonic.Cmovb, Mnemonic.Cmovae, Mnemonic.Cmove, Mnemonic.Cmovne,
            Mnemonic.Cmovbe, Mnemonic.Cmova, Mnemonic.Cmovs, Mnemonic.Cmovns, Mnemonic.Cmovp, Mnemonic.Cmovnp,
            Mnemonic.Cmovl, Mnemonic.Cmovge, Mnemonic.Cmovle, Mnemonic.Cmovg);
        Add(Family.Move, Mnemonic.Mov, Mnemonic.Movzx, Mnemonic.Movsx, Mnemonic.Movsxd, Mnemonic.Lea, Mnemonic.Xchg,
            Mnemonic.Bswap, Mnemonic.Cbw, Mnemonic.Cwde, Mnemonic.Cdqe, Mnemonic.Cwd, Mnemonic.Cdq, Mnemonic.Cqo);
        Add(Family.Atomic, Mnemonic.Xadd, Mnemonic.Cmpxchg);
        Add(Family.String, Mnemonic.Movsb, Mnemonic.Movsw, Mnemonic.Movsd, Mnemonic.Movsq,
            Mnemonic.Stosb, Mnemonic.Stosw, Mnemonic.Stosd, Mnemonic.Stosq,
            Mnemonic.Lodsb, Mnemonic.Lodsw, Mnemonic.Lodsd, Mnemonic.Lodsq,
            Mnemonic.Cmpsb, Mnemonic.Cmpsw, Mnemonic.Cmpsd, Mnemonic.Cmpsq,
            Mnemonic.Scasb, Mnemonic.Scasw, Mnemonic.Scasd, Mnemonic.Scasq);
        Add(Family.Flag, Mnemonic.Std, Mnemonic.Cld, Mnemonic.Stc, Mnemonic.Clc, Mnemonic.Cmc);
        // x86-64-v3's integer extensions (VEX-encoded except movbe, adcx, adox).
        Add(Family.Bmi, Mnemonic.Andn, Mnemonic.Bextr, Mnemonic.Blsi, Mnemonic.Blsmsk, Mnemonic.Blsr, Mnemonic.Bzhi,
            Mnemonic.Mulx, Mnemonic.Pdep, Mnemonic.Pext, Mnemonic.Rorx, Mnemonic.Sarx, Mnemonic.Shlx, Mnemonic.Shrx,
            Mnemonic.Movbe, Mnemonic.Adcx, Mnemonic.Adox);
        return d;
    }

    /// <summary>
    /// Forms the emulator is known not to support yet: excluded from register-form generation (only
    /// their memory form is generated). Empty now; add a code here, with the reason, only together
    /// with an issue to implement it.
    /// </summary>
    public static readonly HashSet<Code> KnownUnsupported = [];

    /// <summary>Every generatable form, in Code order. For KnownUnsupported codes only the memory form is generated.</summary>
    public static readonly IReadOnlyList<Form> All = Build();

    public static IReadOnlyList<Form> Of(Family f) => All.Where(x => x.Family == f).ToArray();

    static IReadOnlyList<Form> Build()
    {
        var list = new List<Form>();
        foreach (var code in Enum.GetValues<Code>())
        {
            if (code == Code.INVALID) continue;
            var op = code.ToOpCode();
            if (!op.IsInstruction || !op.Mode64) continue;
            if (!Families.TryGetValue(op.Mnemonic, out var family)) continue;
            // VEX only for the GPR-only BMI forms (the others are SSE/AVX, which the machine does not implement).
            if (op.Encoding != EncodingKind.Legacy && !(op.Encoding == EncodingKind.VEX && family == Family.Bmi)) continue;
            if (!HostSupports(op.Mnemonic)) continue;
            var slots = new Slot[op.OpCount];
            bool ok = true;
            for (int i = 0; i < op.OpCount && ok; i++)
            {
                var s = SlotOf(op.GetOpKind(i));
                // movbe's memory operand is a real access, not lea's address.
                if (s is { Kind: SlotKind.Address } && op.Mnemonic == Mnemonic.Movbe) s = new Slot(SlotKind.RegOrMem, 0, MemOnly: true);
                if (s is null) ok = false; else slots[i] = s.Value;
            }
            if (!ok) continue;
            // String mnemonics: only the plain (implicit-operand) forms; Movsd/Cmpsd with xmm were rejected above.
            list.Add(new Form(code, op.Mnemonic, family, slots, op.CanUseLockPrefix));
        }
        return list;
    }

    /// <summary>
    /// Never run an encoding the host does not implement: without BMI1/LZCNT, tzcnt/lzcnt silently run
    /// as bsf/bsr; without POPCNT, popcnt is #UD and would kill the test process. .NET has no
    /// IsSupported for MOVBE and ADX: the host's CPUID answers (leaf 1 ECX bit 22; leaf 7 EBX bit 19).
    /// </summary>
    public static bool HostSupports(Mnemonic m) => m switch
    {
        Mnemonic.Tzcnt or Mnemonic.Andn or Mnemonic.Bextr or Mnemonic.Blsi or Mnemonic.Blsmsk or Mnemonic.Blsr => System.Runtime.Intrinsics.X86.Bmi1.IsSupported,
        Mnemonic.Bzhi or Mnemonic.Mulx or Mnemonic.Pdep or Mnemonic.Pext or Mnemonic.Rorx or Mnemonic.Sarx or Mnemonic.Shlx or Mnemonic.Shrx
            => System.Runtime.Intrinsics.X86.Bmi2.IsSupported,
        Mnemonic.Lzcnt => System.Runtime.Intrinsics.X86.Lzcnt.IsSupported,
        Mnemonic.Popcnt => System.Runtime.Intrinsics.X86.Popcnt.IsSupported,
        Mnemonic.Movbe => (System.Runtime.Intrinsics.X86.X86Base.CpuId(1, 0).Ecx >> 22 & 1) != 0,
        Mnemonic.Adcx or Mnemonic.Adox => (System.Runtime.Intrinsics.X86.X86Base.CpuId(7, 0).Ebx >> 19 & 1) != 0,
        _ => true,
    };


    static Slot? SlotOf(OpCodeOperandKind k) => k switch
    {
        OpCodeOperandKind.r8_or_mem => new Slot(SlotKind.RegOrMem, 1),
        OpCodeOperandKind.r16_or_mem => new Slot(SlotKind.RegOrMem, 2),
        OpCodeOperandKind.r32_or_mem => new Slot(SlotKind.RegOrMem, 4),
        OpCodeOperandKind.r64_or_mem => new Slot(SlotKind.RegOrMem, 8),
        OpCodeOperandKind.r8_reg => new Slot(SlotKind.Reg, 1),
        OpCodeOperandKind.r16_reg or OpCodeOperandKind.r16_rm => new Slot(SlotKind.Reg, 2),
        OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_rm => new Slot(SlotKind.Reg, 4),
        OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_rm => new Slot(SlotKind.Reg, 8),
        OpCodeOperandKind.r32_vvvv => new Slot(SlotKind.Reg, 4),
        OpCodeOperandKind.r64_vvvv => new Slot(SlotKind.Reg, 8),
        OpCodeOperandKind.r8_opcode => new Slot(SlotKind.RegOpcode, 1),
        OpCodeOperandKind.r16_opcode => new Slot(SlotKind.RegOpcode, 2),
        OpCodeOperandKind.r32_opcode => new Slot(SlotKind.RegOpcode, 4),
        OpCodeOperandKind.r64_opcode => new Slot(SlotKind.RegOpcode, 8),
        OpCodeOperandKind.mem => new Slot(SlotKind.Address, 0),
        OpCodeOperandKind.mem_offs => new Slot(SlotKind.MemOffs, 0),
        OpCodeOperandKind.imm8 => new Slot(SlotKind.Imm, 1, OpKind.Immediate8),
        OpCodeOperandKind.imm8_const_1 => new Slot(SlotKind.Imm, 1, OpKind.Immediate8, ConstOne: true),
        OpCodeOperandKind.imm8sex16 => new Slot(SlotKind.Imm, 1, OpKind.Immediate8to16),
        OpCodeOperandKind.imm8sex32 => new Slot(SlotKind.Imm, 1, OpKind.Immediate8to32),
        OpCodeOperandKind.imm8sex64 => new Slot(SlotKind.Imm, 1, OpKind.Immediate8to64),
        OpCodeOperandKind.imm16 => new Slot(SlotKind.Imm, 2, OpKind.Immediate16),
        OpCodeOperandKind.imm32 => new Slot(SlotKind.Imm, 4, OpKind.Immediate32),
        OpCodeOperandKind.imm32sex64 => new Slot(SlotKind.Imm, 4, OpKind.Immediate32to64),
        OpCodeOperandKind.imm64 => new Slot(SlotKind.Imm, 8, OpKind.Immediate64),
        OpCodeOperandKind.al => new Slot(SlotKind.Fixed, 1, Fixed: Register.AL),
        OpCodeOperandKind.cl => new Slot(SlotKind.Fixed, 1, Fixed: Register.CL),
        OpCodeOperandKind.ax => new Slot(SlotKind.Fixed, 2, Fixed: Register.AX),
        OpCodeOperandKind.eax => new Slot(SlotKind.Fixed, 4, Fixed: Register.EAX),
        OpCodeOperandKind.rax => new Slot(SlotKind.Fixed, 8, Fixed: Register.RAX),
        OpCodeOperandKind.seg_rSI or OpCodeOperandKind.es_rDI or OpCodeOperandKind.seg_rDI => new Slot(SlotKind.String, 0),
        _ => null,
    };
}
