using Harness.Smp.Cpu;
using Iced.Intel;

namespace Harness.Smp.Decode;

/// <summary>
/// Everything the decoder knows about one mnemonic, read once per decoded instruction: its
/// handlers by operand form, size and lock prefix (the size-specialized handler is the fast path:
/// there is no second table), or one handler for every form; a check for what the operand
/// extraction does not decide; the family's selector; how the block ends after it.
/// </summary>
internal unsafe readonly struct OpRow(FormMap? forms, delegate*<Vcpu, ref Insn, void> exec, delegate*<ref Insn, in Instruction, bool> build, byte sub, OpFlow kind)
{
    public readonly FormMap? Forms = forms;
    /// <summary>The one handler of a form-independent instruction (null when <see cref="Forms"/> or <see cref="Build"/> choose).</summary>
    public readonly delegate*<Vcpu, ref Insn, void> Exec = exec;
    /// <summary>
    /// Runs after the operands are extracted and Exec/Forms applied: rejects an unsupported operand
    /// form (false), fills fields the generic extraction does not, or picks the handler from the operands.
    /// </summary>
    public readonly delegate*<ref Insn, in Instruction, bool> Build = build;
    public readonly byte Sub = sub;
    public readonly OpFlow Kind = kind;
}

[Flags]
internal enum OpFlow : byte
{
    Plain = 0,
    /// <summary>Transfers control: the handler sets RIP, and the block ends.</summary>
    Branch = 1,
    /// <summary>Changes state the block loop or event check depends on (IF, CPL, paging, MSRs...): the block ends after it.</summary>
    EndsBlock = 2,
    /// <summary>
    /// Reads or sets something relative to guest time (rdtsc, the APIC timer MSRs, the sti and mov-ss
    /// interrupt shadows): it runs alone in its block, where the interpreter's time (updated once per
    /// block) is exact. Implies <see cref="EndsBlock"/>.
    /// </summary>
    ReadsClock = 4,
}

/// <summary>Operand form after the generic extraction: register (R), memory (M), immediate (I), in operand order.</summary>
internal enum Form : byte { R, M, RR, RM, MR, RI, MI }

/// <summary>
/// A family's handlers by operand form, operand size and lock prefix, declared once
/// (<c>new FormMap().On(Form.RR, ...).Locked(Form.MR, ...)</c>). A form, size or prefix without an
/// entry is unsupported: the decoder stops the machine naming the instruction.
/// </summary>
internal sealed unsafe class FormMap
{
    private const int Forms = 7, Sizes = 4;
    private readonly nint[] plain = new nint[Forms * Sizes], locked = new nint[Forms * Sizes];

    /// <summary>One handler for every operand size of form f.</summary>
    public FormMap On(Form f, delegate*<Vcpu, ref Insn, void> any) => Set(plain, f, any, any, any, any);

    /// <summary>Handlers for 8-, 16-, 32- and 64-bit operands of form f.</summary>
    public FormMap On(Form f, delegate*<Vcpu, ref Insn, void> b, delegate*<Vcpu, ref Insn, void> w,
        delegate*<Vcpu, ref Insn, void> d, delegate*<Vcpu, ref Insn, void> q) => Set(plain, f, b, w, d, q);

    /// <summary>The lock-prefixed form f, every operand size.</summary>
    public FormMap Locked(Form f, delegate*<Vcpu, ref Insn, void> any) => Set(locked, f, any, any, any, any);

    public FormMap Locked(Form f, delegate*<Vcpu, ref Insn, void> b, delegate*<Vcpu, ref Insn, void> w,
        delegate*<Vcpu, ref Insn, void> d, delegate*<Vcpu, ref Insn, void> q) => Set(locked, f, b, w, d, q);

    /// <summary>Form f with and without the lock prefix (memory forms atomic either way: xchg, xadd, cmpxchg).</summary>
    public FormMap Always(Form f, delegate*<Vcpu, ref Insn, void> any) => On(f, any).Locked(f, any);

    public delegate*<Vcpu, ref Insn, void> Find(Form f, int sizeLog, bool isLocked) =>
        (delegate*<Vcpu, ref Insn, void>)(isLocked ? locked : plain)[(int)f * Sizes + sizeLog];

    private FormMap Set(nint[] t, Form f, delegate*<Vcpu, ref Insn, void> b, delegate*<Vcpu, ref Insn, void> w,
        delegate*<Vcpu, ref Insn, void> d, delegate*<Vcpu, ref Insn, void> q)
    {
        int i = (int)f * Sizes;
        t[i] = (nint)b; t[i + 1] = (nint)w; t[i + 2] = (nint)d; t[i + 3] = (nint)q;
        return this;
    }
}

/// <summary>
/// The ISA as data: every supported mnemonic maps to a rule, registered by the file of its
/// instruction family. An instruction Iced decodes whose mnemonic (or operand form) has no rule
/// stops the machine with a clear report rather than guessing.
/// </summary>
internal static unsafe class OpTable
{
    public static readonly int MnemonicCount = (int)Enum.GetValues<Mnemonic>().Max() + 1;
    private static readonly OpRow[] rows = new OpRow[MnemonicCount];
    private static readonly bool[] known = new bool[MnemonicCount];

    static OpTable()
    {
        Exec.Alu.Install();
        Exec.Moves.Install();
        Exec.Shifts.Install();
        Exec.MulDiv.Install();
        Exec.Bits.Install();
        Exec.Bmi.Install();
        Exec.Atomics.Install();
        Exec.Stack.Install();
        Exec.Branches.Install();
        Exec.Strings.Install();
        Exec.SystemOps.Install();
    }

    /// <summary>A family whose handler depends on the operands in ways a form map does not capture: build picks it.</summary>
    public static void Add(Mnemonic m, delegate*<ref Insn, in Instruction, bool> build, byte sub = 0, OpFlow kind = OpFlow.Plain) =>
        Put(m, new OpRow(null, null, build, sub, kind));

    /// <summary>Handlers by operand form and size; check (optional) rejects forms or fills extra fields.</summary>
    public static void Add(Mnemonic m, FormMap forms, byte sub = 0, OpFlow kind = OpFlow.Plain, delegate*<ref Insn, in Instruction, bool> check = null) =>
        Put(m, new OpRow(forms, null, check, sub, kind));

    /// <summary>One handler whatever the operands; check (optional) rejects forms or fills extra fields.</summary>
    public static void Add(Mnemonic m, delegate*<Vcpu, ref Insn, void> exec, OpFlow kind = OpFlow.Plain, delegate*<ref Insn, in Instruction, bool> check = null, byte sub = 0) =>
        Put(m, new OpRow(null, exec, check, sub, kind));

    private static void Put(Mnemonic m, OpRow row)
    {
        if (known[(int)m]) throw new InvalidOperationException($"mnemonic {m} registered twice");
        rows[(int)m] = row;
        known[(int)m] = true;
    }

    /// <summary>The row of a mnemonic (tests pin the table through it).</summary>
    internal static bool TryRow(Mnemonic m, out OpRow row)
    {
        row = rows[(int)m];
        return known[(int)m];
    }

    /// <summary>Fills x from ins. Returns how the block ends after it; sets x.Exec to a stop handler when unsupported.</summary>
    public static OpFlow Build(ref Insn x, in Instruction ins)
    {
        x = default;
        x.Ip = ins.IP;
        x.NextIp = ins.NextIP;
        x.Length = (byte)ins.Length;
        x.Code = ins.Code;
        x.R0 = x.R1 = x.R2 = x.MBase = x.MIndex = Reg.None;
        if (ins.Code == Code.INVALID) { x.Exec = &Exec.SystemOps.InvalidOpcode; return OpFlow.EndsBlock; }
        if (!known[(int)ins.Mnemonic] || !Operands(ref x, ins)) { x.Exec = &Exec.SystemOps.Unsupported; return OpFlow.EndsBlock; }
        if (ins.HasLockPrefix) x.Flags |= InsnFlags.Lock;
        if (ins.HasRepePrefix || ins.HasRepPrefix) x.Flags |= InsnFlags.Rep;
        if (ins.HasRepnePrefix) x.Flags |= InsnFlags.RepNe;
        ref readonly OpRow r = ref rows[(int)ins.Mnemonic];
        x.Sub = r.Sub;
        x.Exec = r.Exec;
        if (r.Forms is { } forms) x.Exec = forms.Find(FormOf(x, ins), x.SizeLog, x.Has(InsnFlags.Lock));
        if (r.Build != null && !r.Build(ref x, ins)) x.Exec = null;
        if (x.Exec == null) { x.Exec = &Exec.SystemOps.Unsupported; return OpFlow.EndsBlock; }
        var kind = r.Kind;
        if (x.Has(InsnFlags.Branch)) kind |= OpFlow.Branch;
        if (x.Has(InsnFlags.EndsBlock)) kind |= OpFlow.EndsBlock;
        if (x.Has(InsnFlags.ReadsClock)) kind |= OpFlow.ReadsClock;
        if ((kind & OpFlow.ReadsClock) != 0) kind |= OpFlow.EndsBlock;
        if ((kind & OpFlow.Branch) != 0) x.Flags |= InsnFlags.Branch;
        return kind;
    }

    /// <summary>Register index for a GPR: 0..15 (any width), 16..19 for AH/CH/DH/BH. -1 if not a GPR.</summary>
    public static int GprIndex(Register r)
    {
        if (r is Register.AH or Register.CH or Register.DH or Register.BH) return Reg.HighByteBase + (r - Register.AH);
        if (!r.IsGPR()) return -1;
        return r.GetFullRegister().GetNumber();
    }

    public static int SizeLog(int bytes) => bytes switch { 1 => 0, 2 => 1, 4 => 2, 8 => 3, _ => -1 };

    /// <summary>Generic operand extraction: registers in order into R0/R1, the memory recipe, the immediate.</summary>
    private static bool Operands(ref Insn x, in Instruction ins)
    {
        int regs = 0;
        int size = 0;
        for (int i = 0; i < ins.OpCount; i++)
        {
            switch (ins.GetOpKind(i))
            {
                case OpKind.Register:
                {
                    var reg = ins.GetOpRegister(i);
                    int idx = GprIndex(reg);
                    if (idx < 0)
                    {
                        // Segment and control registers are handled by their family's builder.
                        if (reg.IsSegmentRegister() || reg.IsCR()) continue;
                        return false;
                    }
                    // A third register operand is only ever shld/shrd's CL count: the family reads it from the encoding.
                    if (regs == 2 && reg == Register.CL && i == 2) continue;
                    if (regs == 0) x.R0 = (byte)idx; else if (regs == 1) x.R1 = (byte)idx; else if (regs == 2) x.R2 = (byte)idx; else return false;
                    if (i == 0 || size == 0) size = reg.GetSize();
                    regs++;
                    break;
                }
                case OpKind.Memory:
                {
                    x.Flags |= InsnFlags.MemOperand;
                    var b = ins.MemoryBase;
                    if (b == Register.RIP || b == Register.EIP) x.Disp = (long)ins.MemoryDisplacement64;
                    else
                    {
                        x.Disp = (long)ins.MemoryDisplacement64;
                        if (b != Register.None) { int bi = GprIndex(b); if (bi < 0 || bi >= 16) return false; x.MBase = (byte)bi; if (b.GetSize() == 4) x.Flags |= InsnFlags.Addr32; }
                        var ix = ins.MemoryIndex;
                        if (ix != Register.None)
                        {
                            int ii = GprIndex(ix);
                            if (ii < 0 || ii >= 16) return false;
                            x.MIndex = (byte)ii;
                            x.MScale = (byte)System.Numerics.BitOperations.Log2((uint)ins.MemoryIndexScale);
                            if (ix.GetSize() == 4) x.Flags |= InsnFlags.Addr32;
                        }
                        if ((x.Flags & InsnFlags.Addr32) != 0) x.Disp = (long)(uint)x.Disp;
                    }
                    x.MSeg = ins.MemorySegment switch { Register.FS => 1, Register.GS => 2, _ => 0 };
                    if (i == 0 || size == 0) size = ins.MemorySize.GetSize();
                    break;
                }
                case OpKind.Immediate8: case OpKind.Immediate16: case OpKind.Immediate32: case OpKind.Immediate64:
                case OpKind.Immediate8to16: case OpKind.Immediate8to32: case OpKind.Immediate8to64: case OpKind.Immediate32to64:
                    if ((x.Flags & InsnFlags.ImmSecond) != 0) x.Size2 = (byte)ins.GetImmediate(i);
                    else { x.Imm = ins.GetImmediate(i); x.Flags |= InsnFlags.ImmSecond; }
                    break;
                case OpKind.Immediate8_2nd:
                    x.Size2 = ins.Immediate8_2nd;
                    break;
                case OpKind.NearBranch16: case OpKind.NearBranch32: case OpKind.NearBranch64:
                    x.Imm = ins.NearBranchTarget;
                    break;
                default:
                    // String operands ([rsi]/[rdi] implicit forms) are handled by their family.
                    if (ins.GetOpKind(i) is OpKind.MemorySegRSI or OpKind.MemorySegESI or OpKind.MemoryESRDI or OpKind.MemoryESEDI
                        or OpKind.MemorySegRDI or OpKind.MemorySegEDI) { size = ins.MemorySize.GetSize(); continue; }
                    return false;
            }
        }
        x.Flags &= ~InsnFlags.ImmSecond;
        if (size == 0) size = 8;
        int log = SizeLog(size);
        if (log < 0) log = 3;
        x.Size = (byte)size;
        x.SizeLog = (byte)log;
        return true;
    }

    /// <summary>Operand form of a two-operand instruction after <see cref="Operands"/>.</summary>
    public static Form FormOf(in Insn x, in Instruction ins)
    {
        bool mem = (x.Flags & InsnFlags.MemOperand) != 0;
        bool imm = ins.OpCount >= 2 && ins.GetOpKind(ins.OpCount - 1) is >= OpKind.Immediate8 and <= OpKind.Immediate32to64 and not OpKind.Immediate8_2nd;
        if (ins.OpCount == 1) return mem ? Form.M : Form.R;
        if (imm) return mem ? Form.MI : Form.RI;
        if (!mem) return Form.RR;
        return ins.GetOpKind(0) == OpKind.Memory ? Form.MR : Form.RM;
    }
}
