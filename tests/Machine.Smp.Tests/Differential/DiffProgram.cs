// The generated test case: input registers/flags/scratch plus a short list of steps. A step is one
// instruction of the catalog with its operands chosen, plus the setup instructions it needs to stay
// safe natively (string pointers and counts, a small bit offset for bt with memory, an optional
// dividend extension before div). Steps are plain data so FsCheck can shrink them.

using System.Text;
using Iced.Intel;
using Harness.Smp.Tests.Native;

using Harness.Properties.Generators;

namespace Harness.Smp.Tests.Differential;

/// <summary>Deterministic SplitMix64: one generator for FsCheck seeds and the exhaustive tests.</summary>
public sealed record LeaAddress(Register Base, Register Index, int Scale, long Disp);

public sealed record Step(
    Form Form,
    Register[] Regs,
    bool Mem,
    int Disp,
    long Imm,
    bool Lock,
    RepPrefixKind Rep,
    LeaAddress? Address,
    int SetupA,
    int SetupB,
    int SetupC,
    Register Index = Register.None,
    int Scale = 1)
{
    /// <summary>Memory operand [r15 + Index*Scale + Disp]; Index is loaded with SetupB right before the instruction.</summary>
    public bool HasIndex => Mem && Index != Register.None;
    public bool IsBtMemRegOffset => Mem && Form.Mnemonic is Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc
        && Form.Slots.Length == 2 && Form.Slots[1].Kind == SlotKind.Reg;
    public bool IsDiv => Form.Mnemonic is Mnemonic.Div or Mnemonic.Idiv;
}

/// <summary>One instruction of the expanded program and the step it came from.</summary>
public readonly record struct Line(Instruction Ins, int Step, bool Setup, byte[] Bytes);

public sealed class DiffProgram
{
    /// <summary>r15 points here: the middle of the scratch page, so +-0x400 displacements stay inside.</summary>
    public static ulong Base => NativeRunner.ScratchAddress + 0x800;
    public const int Rsp = 4, R15 = 15;

    public required ulong[] Regs { get; init; }     // 16 GPRs; RSP and R15 fixed
    public required ulong Flags { get; init; }      // CF PF AF ZF SF OF DF subset
    public required int ScratchSeed { get; init; }  // 0: zero page
    public required IReadOnlyList<Step> Steps { get; init; }

    public DiffProgram With(ulong[]? regs = null, ulong? flags = null, int? scratchSeed = null, IReadOnlyList<Step>? steps = null) =>
        new() { Regs = regs ?? Regs, Flags = flags ?? Flags, ScratchSeed = scratchSeed ?? ScratchSeed, Steps = steps ?? Steps };

    public NativeState Input()
    {
        var s = new NativeState { Rflags = Flags & NativeState.FlagsMask };
        Regs.CopyTo(s.Gpr, 0);
        s.Gpr[Rsp] = Boot.BootLayout.BootStackTop;
        s.Gpr[R15] = Base;
        return s;
    }

    public byte[] Scratch()
    {
        var b = new byte[NativeRunner.ScratchSize];
        if (ScratchSeed == 0) return b;
        var r = new Rng((ulong)ScratchSeed * 0x2545F491);
        for (int i = 0; i < b.Length; i += 8)
            BitConverter.TryWriteBytes(b.AsSpan(i), ProgramGen.EdgeValue(r));
        return b;
    }

    List<Line>? lines;

    /// <summary>The program as instructions with their encodings (no branches: each encodes at ip 0 and they concatenate).</summary>
    public IReadOnlyList<Line> Lines => lines ??= Expand();

    List<Line> Expand()
    {
        var list = new List<Line>();
        for (int i = 0; i < Steps.Count; i++)
        {
            foreach (var (ins, setup) in ProgramGen.Instructions(Steps[i]))
                list.Add(new Line(ins, i, setup, ProgramGen.Encode(ins) ?? throw new InvalidOperationException($"cannot encode {ins.Code}: {ins}")));
        }
        return list;
    }

    public bool IsEncodable()
    {
        try { _ = Lines; return true; }
        catch (InvalidOperationException) { return false; }
    }

    public static byte[] Code(IReadOnlyList<Line> lines, int count)
    {
        var ms = new MemoryStream();
        for (int i = 0; i < count; i++) ms.Write(lines[i].Bytes);
        return ms.ToArray();
    }

    static readonly string[] Names = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

    public string Disassembly(int markAt = -1, string mark = "")
    {
        var sb = new StringBuilder();
        var fmt = new NasmFormatter();
        fmt.Options.HexPrefix = "0x";
        fmt.Options.HexSuffix = "";
        var output = new StringOutput();
        ulong ip = EmulatorRunner.CodeAddress;
        var ls = Lines;
        for (int i = 0; i < ls.Count; i++)
        {
            // Decode the real bytes, so what is printed is what runs.
            var dec = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(ls[i].Bytes), ip);
            dec.Decode(out var ins);
            fmt.Format(ins, output);
            string text = output.ToStringAndReset();
            sb.Append($"  {ip:x6}  {(ls[i].Setup ? "  " : "")}{text,-40}");
            sb.Append(ls[i].Setup ? $" ; step {ls[i].Step} setup" : $" ; step {ls[i].Step} {ls[i].Ins.Code}");
            if (i == markAt) sb.Append("   <-- ").Append(mark);
            sb.AppendLine();
            ip += (ulong)ls[i].Bytes.Length;
        }
        return sb.ToString();
    }

    public string InputText()
    {
        var sb = new StringBuilder("  input:");
        var s = Input();
        for (int i = 0; i < 16; i++)
        {
            if (i % 4 == 0) sb.AppendLine().Append("   ");
            string v = i == R15 ? "scratch+0x800" : s.Gpr[i].ToString("x16");
            sb.Append($" {Names[i],3}={v,-16}");
        }
        sb.AppendLine().Append("    flags: ").Append(FlagText(Flags)).Append($"   scratch seed: {ScratchSeed}").AppendLine();
        return sb.ToString();
    }

    public static string FlagText(ulong f)
    {
        var parts = new List<string>();
        foreach (var (bit, name) in FlagNames) if ((f & bit) != 0) parts.Add(name);
        return parts.Count == 0 ? "-" : string.Join(" ", parts);
    }

    public static readonly (ulong Bit, string Name)[] FlagNames =
        [(NativeState.CF, "CF"), (NativeState.PF, "PF"), (NativeState.AF, "AF"), (NativeState.ZF, "ZF"),
         (NativeState.SF, "SF"), (NativeState.DF, "DF"), (NativeState.OF, "OF")];

    public static string RegName(int i) => Names[i];

    public override string ToString() => Environment.NewLine + InputText() + Disassembly();
}

/// <summary>Generation of programs and of the instructions of a step.</summary>
public static class ProgramGen
{
    // GPR numbers a generated operand may name: never RSP (host stack) or R15 (scratch base).
    static readonly int[] Pool = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];

    public static Register Gpr(int number, int size) => size switch
    {
        1 => number < 4 ? Register.AL + number : number < 8 ? Register.SPL + (number - 4) : Register.R8L + (number - 8),
        2 => Register.AX + number,
        4 => Register.EAX + number,
        _ => Register.RAX + number,
    };

    static Register RandomReg(Rng r, int size, bool high)
    {
        if (size == 1 && high && r.Chance(0.5)) return Register.AH + r.Next(4);
        return Gpr(r.Pick(Pool), size);
    }

    /// <summary>Register/memory values biased toward the edges where flag logic goes wrong.</summary>
    public static ulong EdgeValue(Rng r)
    {
        ulong[] edges = [0, 1, 2, ulong.MaxValue, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000,
            0xFFFF_FFFF, 0x1_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFE, 0x0F, 0x10];
        switch (r.Next(8))
        {
            case 0: case 1: return edges[r.Next(edges.Length)];
            case 2: return (ulong)r.Range(0, 70);
            case 3:
            {   // a small-width value, sign-extended or not, with random upper garbage sometimes
                int bits = 8 << r.Next(4);
                ulong v = r.NextU64() & (bits == 64 ? ulong.MaxValue : (1UL << bits) - 1);
                if (r.Chance(0.5) && bits < 64 && (v >> (bits - 1) & 1) != 0) v |= ulong.MaxValue << bits;
                return v;
            }
            case 4: return edges[r.Next(edges.Length)] ^ (1UL << r.Next(64));
            default: return r.NextU64();
        }
    }

    static long Immediate(Rng r, Form f, Slot s)
    {
        if (s.ConstOne) return 1;
        if (f.Family == Family.Shift)
        {
            int[] counts = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65];
            int c = r.Chance(0.7) ? counts[r.Next(counts.Length)] : r.Next(256);
            return c;
        }
        if (f.Mnemonic is Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc)
            return r.Chance(0.7) ? r.Range(0, 70) : r.Next(256);
        ulong v = EdgeValue(r);
        return s.Size switch
        {
            1 => (sbyte)v,
            2 => (short)v,
            4 => (int)v,
            _ => (long)v,
        };
    }

    /// <summary>A random step for form f (never null: falls back to a plainer variant if the first choice cannot encode).</summary>
    public static Step RandomStep(Rng r, Form f)
    {
        for (int attempt = 0; ; attempt++)
        {
            bool high = attempt == 0 && r.Chance(0.2);
            bool mem = f.HasRegOrMem && (InstructionCatalog.KnownUnsupported.Contains(f.Code) || f.MemOnly || r.Chance(0.4));
            var regs = new Register[f.Slots.Length];
            long imm = 0;
            LeaAddress? lea = null;
            int disp = 0;
            for (int i = 0; i < f.Slots.Length; i++)
            {
                var s = f.Slots[i];
                switch (s.Kind)
                {
                    case SlotKind.Reg: case SlotKind.RegOpcode: regs[i] = RandomReg(r, s.Size, high); break;
                    case SlotKind.RegOrMem: regs[i] = mem ? Register.None : RandomReg(r, s.Size, high); break;
                    case SlotKind.Fixed: regs[i] = s.Fixed; break;
                    case SlotKind.Imm: imm = Immediate(r, f, s); break;
                    case SlotKind.Address: lea = RandomAddress(r); break;
                }
            }
            if (mem || f.Slots.Any(s => s.Kind == SlotKind.MemOffs))
                disp = r.Chance(0.5) ? r.Range(-8, 8) * 8 : r.Range(-0x400, 0x3F0);
            // lock only where it is legal (memory destination of a lockable instruction): anything else is #UD natively.
            bool lockIt = mem && f.CanLock && f.Mnemonic != Mnemonic.Bt && f.Slots[0].Kind == SlotKind.RegOrMem && r.Chance(0.3);
            var rep = RepPrefixKind.None;
            int a = 0, b = 0, c = -1;
            if (f.Family == Family.String)
            {
                bool compare = f.Mnemonic.ToString().StartsWith("Cmps") || f.Mnemonic.ToString().StartsWith("Scas");
                if (r.Chance(0.6)) rep = compare && r.Chance(0.5) ? RepPrefixKind.Repne : RepPrefixKind.Repe;
                a = r.Range(-0x300, 0x300);
                b = r.Chance(0.3) ? a + r.Range(-16, 16) : r.Range(-0x300, 0x300);   // overlapping buffers too
                c = rep != RepPrefixKind.None ? r.Range(0, 16) : -1;
            }
            var step = new Step(f, regs, mem, disp, imm, lockIt, rep, lea, a, b, c);
            if (step.IsBtMemRegOffset) step = step with { SetupA = r.Range(-512, 511) };
            if (step.IsDiv) step = step with { SetupA = r.Chance(0.25) ? 0 : r.Range(1, 2) };
            // cmpxchg mostly fails with random inputs: half the time load the accumulator from the destination first.
            if (f.Mnemonic == Mnemonic.Cmpxchg && r.Chance(0.5)) step = step with { SetupA = 1 };
            // 16-bit shld/shrd to memory with a count above 16 writes an undefined value: keep immediates in range.
            if (f.Mnemonic is Mnemonic.Shld or Mnemonic.Shrd && mem && f.Slots[0].Size == 2 && (imm & 31) > 16) step = step with { Imm = imm & 15 };
            // Now and then an indexed memory operand; only for steps without other setup, so nothing can
            // clobber the index between its load and its use.
            if (mem && !step.IsBtMemRegOffset && !step.IsDiv && step.SetupA == 0 && f.Family != Family.String && r.Chance(0.25))
                step = step with { Index = Register.RAX + r.Pick(Pool), Scale = 1 << r.Next(4), SetupB = r.Range(-16, 16) };
            if (Instructions(step).All(x => Encode(x.Ins) is not null)) return step;
            if (attempt > 20)
            {
                string? err = null;
                foreach (var x in Instructions(step)) if (Encode(x.Ins, out err) is null) break;
                throw new InvalidOperationException($"cannot generate an encodable {f.Code}: {err}");
            }
        }
    }

    static LeaAddress RandomAddress(Rng r)
    {
        bool a32 = r.Chance(0.15);
        int[] addrPool = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        Register Reg(int n) => a32 ? Register.EAX + n : Register.RAX + n;
        Register bas = r.Next(5) switch { 0 or 1 or 2 => Reg(15), 3 => Reg(r.Pick(addrPool)), _ => Register.None };
        Register idx = r.Chance(0.5) ? Register.None : Reg(r.Pick(addrPool));
        int scale = 1 << r.Next(4);
        long disp = r.Chance(0.5) ? r.Range(-200, 200) : (int)EdgeValue(r);
        if (bas == Register.None && idx == Register.None) disp = (int)disp;
        return new LeaAddress(bas, idx, scale, disp);
    }

    // Iced: displSize 1 lets the encoder pick disp8 or disp32.
    static MemoryOperand ScratchMem(int disp) => new(Register.R15, disp, 1);

    /// <summary>The instructions of a step: setup first (flagged), then the step's own instruction.</summary>
    public static List<(Instruction Ins, bool Setup)> Instructions(Step s)
    {
        var list = new List<(Instruction, bool)>();
        var f = s.Form;
        if (f.Family == Family.String)
        {
            list.Add((Instruction.Create(Code.Lea_r64_m, Register.RSI, ScratchMem(s.SetupA)), true));
            list.Add((Instruction.Create(Code.Lea_r64_m, Register.RDI, ScratchMem(s.SetupB)), true));
            if (s.SetupC >= 0) list.Add((Instruction.Create(Code.Mov_r32_imm32, Register.ECX, (uint)s.SetupC), true));
            list.Add((StringInstruction(f.Mnemonic, s.Rep), false));
            return list;
        }
        if (s.IsBtMemRegOffset)
            list.Add((Instruction.Create(Code.Mov_rm64_imm32, s.Regs[1].GetFullRegister(), s.SetupA), true));
        if (s.IsDiv && s.SetupA != 0)
        {
            int size = f.Slots[0].Size;
            bool zero = s.SetupA == 1;
            list.Add((size switch
            {
                1 => zero ? Instruction.Create(Code.Mov_r8_imm8, Register.AH, 0) : Instruction.Create(Code.Cbw),
                2 => zero ? Instruction.Create(Code.Mov_r16_imm16, Register.DX, 0) : Instruction.Create(Code.Cwd),
                4 => zero ? Instruction.Create(Code.Mov_r32_imm32, Register.EDX, 0) : Instruction.Create(Code.Cdq),
                _ => zero ? Instruction.Create(Code.Mov_r32_imm32, Register.EDX, 0) : Instruction.Create(Code.Cqo),
            }, true));
        }
        if (f.Mnemonic == Mnemonic.Cmpxchg && s.SetupA == 1)
        {
            // mov rax, <destination> (64-bit, so the comparison succeeds whatever the operand size).
            list.Add((s.Mem ? Instruction.Create(Code.Mov_r64_rm64, Register.RAX, ScratchMem(s.Disp))
                : Instruction.Create(Code.Mov_r64_rm64, Register.RAX, s.Regs[0].GetFullRegister()), true));
        }
        if (s.HasIndex) list.Add((Instruction.Create(Code.Mov_rm64_imm32, s.Index, s.SetupB), true));
        var ins = new Instruction { Code = f.Code };
        for (int i = 0; i < f.Slots.Length; i++)
        {
            var slot = f.Slots[i];
            switch (slot.Kind)
            {
                case SlotKind.Reg: case SlotKind.RegOpcode: case SlotKind.Fixed:
                    ins.SetOpKind(i, OpKind.Register); ins.SetOpRegister(i, s.Regs[i]); break;
                case SlotKind.RegOrMem:
                    if (s.Mem)
                    {
                        ins.SetOpKind(i, OpKind.Memory);
                        ins.MemoryBase = Register.R15;
                        if (s.HasIndex) { ins.MemoryIndex = s.Index; ins.MemoryIndexScale = s.Scale; }
                        ins.MemoryDisplacement64 = (ulong)(long)s.Disp;
                        ins.MemoryDisplSize = 1;
                    }
                    else { ins.SetOpKind(i, OpKind.Register); ins.SetOpRegister(i, s.Regs[i]); }
                    break;
                case SlotKind.Address:
                {
                    var a = s.Address!;
                    ins.SetOpKind(i, OpKind.Memory);
                    ins.MemoryBase = a.Base;
                    ins.MemoryIndex = a.Index;
                    ins.MemoryIndexScale = a.Scale;
                    ins.MemoryDisplacement64 = (ulong)a.Disp;
                    bool a32 = a.Base.GetSize() == 4 || a.Index.GetSize() == 4;
                    ins.MemoryDisplSize = a.Base == Register.None && a.Index == Register.None ? (a32 ? 4 : 8)
                        : 1;
                    break;
                }
                case SlotKind.MemOffs:
                    ins.SetOpKind(i, OpKind.Memory);
                    ins.MemoryDisplacement64 = DiffProgram.Base + (ulong)(long)s.Disp;
                    ins.MemoryDisplSize = 8;
                    break;
                case SlotKind.Imm:
                    ins.SetOpKind(i, slot.ImmKind);
                    ins.SetImmediate(i, s.Imm);
                    break;
            }
        }
        ins.HasLockPrefix = s.Lock;
        list.Add((ins, false));
        return list;
    }

    static Instruction StringInstruction(Mnemonic m, RepPrefixKind rep) => m switch
    {
        Mnemonic.Movsb => Instruction.CreateMovsb(64, Register.None, rep),
        Mnemonic.Movsw => Instruction.CreateMovsw(64, Register.None, rep),
        Mnemonic.Movsd => Instruction.CreateMovsd(64, Register.None, rep),
        Mnemonic.Movsq => Instruction.CreateMovsq(64, Register.None, rep),
        Mnemonic.Stosb => Instruction.CreateStosb(64, rep),
        Mnemonic.Stosw => Instruction.CreateStosw(64, rep),
        Mnemonic.Stosd => Instruction.CreateStosd(64, rep),
        Mnemonic.Stosq => Instruction.CreateStosq(64, rep),
        Mnemonic.Lodsb => Instruction.CreateLodsb(64, Register.None, rep),
        Mnemonic.Lodsw => Instruction.CreateLodsw(64, Register.None, rep),
        Mnemonic.Lodsd => Instruction.CreateLodsd(64, Register.None, rep),
        Mnemonic.Lodsq => Instruction.CreateLodsq(64, Register.None, rep),
        Mnemonic.Cmpsb => Instruction.CreateCmpsb(64, Register.None, rep),
        Mnemonic.Cmpsw => Instruction.CreateCmpsw(64, Register.None, rep),
        Mnemonic.Cmpsd => Instruction.CreateCmpsd(64, Register.None, rep),
        Mnemonic.Cmpsq => Instruction.CreateCmpsq(64, Register.None, rep),
        Mnemonic.Scasb => Instruction.CreateScasb(64, rep),
        Mnemonic.Scasw => Instruction.CreateScasw(64, rep),
        Mnemonic.Scasd => Instruction.CreateScasd(64, rep),
        Mnemonic.Scasq => Instruction.CreateScasq(64, rep),
        _ => throw new ArgumentException($"not a string mnemonic: {m}"),
    };

    sealed class BytesWriter : CodeWriter
    {
        public readonly List<byte> Bytes = [];
        public override void WriteByte(byte value) => Bytes.Add(value);
    }

    /// <summary>Encodes one instruction at ip 0 (nothing here is ip-relative); null if Iced refuses.</summary>
    public static byte[]? Encode(in Instruction ins) => Encode(ins, out _);

    public static byte[]? Encode(in Instruction ins, out string? error)
    {
        var w = new BytesWriter();
        var enc = Iced.Intel.Encoder.Create(64, w);
        return enc.TryEncode(ins, 0, out _, out error) ? w.Bytes.ToArray() : null;
    }

    // ---- whole programs ----------------------------------------------------------------------------

    /// <summary>A random program; forms drawn from the given families (all when empty).</summary>
    public static DiffProgram RandomProgram(Rng r, int maxSteps, params Family[] families)
    {
        var fams = families.Length == 0 ? Enum.GetValues<Family>() : families;
        int n = r.Range(1, Math.Max(1, maxSteps));
        var steps = new List<Step>();
        for (int i = 0; i < n; i++)
        {
            var fam = fams[r.Next(fams.Length)];
            // Mostly the requested families; now and then a flag instruction (std/cld/stc/clc/cmc) in between.
            if (r.Chance(0.1)) fam = Family.Flag;
            var forms = InstructionCatalog.Of(fam);
            steps.Add(RandomStep(r, forms[r.Next(forms.Count)]));
        }
        return RandomInput(r, steps);
    }

    public static DiffProgram RandomInput(Rng r, IReadOnlyList<Step> steps)
    {
        var regs = new ulong[16];
        for (int i = 0; i < 16; i++) regs[i] = EdgeValue(r);
        ulong flags = r.NextU64() & (UndefinedFlags.All6);
        if (r.Chance(0.3)) flags |= NativeState.DF;
        return new DiffProgram { Regs = regs, Flags = flags, ScratchSeed = r.Chance(0.1) ? 0 : r.Range(1, int.MaxValue - 1), Steps = steps };
    }
}
