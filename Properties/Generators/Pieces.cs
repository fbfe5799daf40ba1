using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Properties.Generators;

/// <summary>
/// One piece of a generated program: a few instructions a kernel could contain, emitted at the
/// current point of the body (and possibly out-of-line functions). Every piece is well formed by
/// construction: its branches target its own labels, its loops are bounded, its stack effect is
/// balanced, and it writes neither RSP nor r15 (the private page). <see cref="Shrink"/> gives
/// simpler pieces that keep those properties (FsCheck tries them when a case fails).
/// </summary>
public abstract record Piece
{
    internal abstract void Emit(ProgramBuilder b);

    public virtual IEnumerable<Piece> Shrink() => [];

    /// <summary>Nested pieces (loops, branches, functions), for the "plainer" shrink that replaces a piece by its body.</summary>
    public virtual IReadOnlyList<Piece> Children => [];

    /// <summary>The same piece around other nested pieces (pieces without any return themselves).</summary>
    public virtual Piece WithChildren(IReadOnlyList<Piece> children) => this;

    /// <summary>The piece without its faulting parts (null: it is one), for checks whose scope excludes faults.</summary>
    public Piece? WithoutFaults() => this switch
    {
        Fault => null,
        _ when Children.Count == 0 => this,
        _ => WithChildren(Children.Select(c => c.WithoutFaults()).OfType<Piece>().ToArray()),
    };

    /// <summary>Whether the piece can fault (a load through an unmapped address with a fixup).</summary>
    public virtual bool Faults => Children.Any(c => c.Faults);

    protected static IEnumerable<IReadOnlyList<Piece>> ShrinkList(IReadOnlyList<Piece> ps)
    {
        // Down to an empty body: a loop, branch or call around nothing is well formed.
        for (int i = 0; i < ps.Count; i++) yield return ps.Where((_, j) => j != i).ToArray();
        for (int i = 0; i < ps.Count; i++)
            foreach (var s in ps[i].Shrink())
            {
                var copy = ps.ToArray();
                copy[i] = s;
                yield return copy;
            }
    }
}

/// <summary>One instruction of the differential suite's catalog, with registers from the pool and memory in the private page.</summary>
public sealed record Op(Form Form, Register[] Regs, bool Mem, int Disp, long Imm, bool Lock) : Piece
{
    /// <summary>The memory operand's base: r15 (the private page) or RSP (a <see cref="StackFrame"/>'s locals).</summary>
    public Register Base { get; init; } = Register.R15;

    internal override void Emit(ProgramBuilder b) => b.A.AddInstruction(Build());

    internal Instruction Build()
    {
        var ins = new Instruction { Code = Form.Code };
        for (int i = 0; i < Form.Slots.Length; i++)
        {
            var s = Form.Slots[i];
            switch (s.Kind)
            {
                case SlotKind.Reg: case SlotKind.RegOpcode: case SlotKind.Fixed:
                    ins.SetOpKind(i, OpKind.Register);
                    ins.SetOpRegister(i, Regs[i]);
                    break;
                case SlotKind.RegOrMem when !Mem:
                    ins.SetOpKind(i, OpKind.Register);
                    ins.SetOpRegister(i, Regs[i]);
                    break;
                case SlotKind.RegOrMem:
                case SlotKind.Address:
                    ins.SetOpKind(i, OpKind.Memory);
                    ins.MemoryBase = Base;
                    ins.MemoryDisplacement64 = (ulong)Disp;
                    ins.MemoryDisplSize = Disp is >= -128 and <= 127 ? 1 : 4;
                    break;
                case SlotKind.Imm:
                    ins.SetOpKind(i, s.ImmKind);
                    ins.SetImmediate(i, s.ConstOne ? 1 : Imm);
                    break;
            }
        }
        ins.HasLockPrefix = Lock;
        return ins;
    }

    public override IEnumerable<Piece> Shrink()
    {
        if (Lock) yield return this with { Lock = false };
        if (Mem && !Form.MemOnly && Form.Slots.Any(s => s.Kind == SlotKind.RegOrMem))
        {
            int i = Array.FindIndex(Form.Slots, s => s.Kind == SlotKind.RegOrMem);
            var regs = (Register[])Regs.Clone();
            regs[i] = Pool.Gpr(0, Form.Slots[i].Size);
            var plain = this with { Mem = false, Regs = regs, Disp = 0, Lock = false };
            if (plain.Encodable) yield return plain;
        }
        if (Disp != 0) yield return this with { Disp = 0 };
        if (Imm != 0 && Form.Slots.Any(s => s.Kind == SlotKind.Imm && !s.ConstOne))
        {
            yield return this with { Imm = 0 };
            if (Imm != 1) yield return this with { Imm = 1 };
        }
    }

    internal bool Encodable => ProgramBuilder.Encodes(Build());

    public override string ToString() => Listing.Format(Build());
}

/// <summary>push a; pop b (b := a through the stack).</summary>
public sealed record PushPop(Register A, Register B) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        b.A.AddInstruction(Instruction.Create(Code.Push_r64, A));
        b.A.AddInstruction(Instruction.Create(Code.Pop_r64, B));
    }

    public override IEnumerable<Piece> Shrink() { if (A != B) yield return this with { B = A }; }
}

/// <summary>A RIP-relative load from the constants (read-only) or, with one vCPU, a store to the private page, of 1, 2, 4 or 8 bytes.</summary>
public sealed record RipRelative(Register Reg, int Size, bool Store, int Word) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        ulong target = Store ? Layout.Private(0) + (ulong)(Word * 8 % Layout.OperandBytes) : Layout.Constants + (ulong)(Word % Layout.ConstantWords * 8);
        var reg = Pool.Resize(Reg, Size);
        var mem = new MemoryOperand(Register.RIP, (long)target);
        Code code = (Size, Store) switch
        {
            (1, false) => Code.Mov_r8_rm8, (2, false) => Code.Mov_r16_rm16, (4, false) => Code.Mov_r32_rm32, (_, false) => Code.Mov_r64_rm64,
            (1, true) => Code.Mov_rm8_r8, (2, true) => Code.Mov_rm16_r16, (4, true) => Code.Mov_rm32_r32, (_, true) => Code.Mov_rm64_r64,
        };
        b.A.AddInstruction(Store ? Instruction.Create(code, mem, reg) : Instruction.Create(code, reg, mem));
    }

    public override IEnumerable<Piece> Shrink() { if (Size != 8) yield return this with { Size = 8 }; if (Word != 0) yield return this with { Word = 0 }; }
}

/// <summary>A locked commutative add to the shared page (every vCPU's adds land whatever the interleaving).</summary>
public sealed record SharedAdd(int Word, int Amount) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var ins = Instruction.Create(Code.Add_rm64_imm32, new MemoryOperand(Register.RIP, (long)(Layout.Shared + (ulong)(Word % 64 * 8))), Amount);
        ins.HasLockPrefix = true;
        // The add's flags depend on what the other vCPUs added first: keep the program's own.
        b.A.pushfq();
        b.A.AddInstruction(ins);
        b.A.popfq();
    }

    public override IEnumerable<Piece> Shrink() { if (Amount != 1) yield return this with { Amount = 1 }; }
}

/// <summary>pushfq; body; popfq, or cli; body; sti (the body cannot change the interrupt flag for good).</summary>
public sealed record Bracket(bool InterruptsOff, IReadOnlyList<Piece> Body) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        if (InterruptsOff) b.A.cli(); else b.A.pushfq();
        foreach (var p in Body) p.Emit(b);
        if (InterruptsOff) b.A.sti(); else b.A.popfq();
    }

    public override IReadOnlyList<Piece> Children => Body;
    public override Piece WithChildren(IReadOnlyList<Piece> children) => this with { Body = children };
    public override IEnumerable<Piece> Shrink() => ShrinkList(Body).Select(x => this with { Body = x });
}

/// <summary>A forward conditional branch over the body.</summary>
public sealed record Skip(ConditionCode Condition, IReadOnlyList<Piece> Body) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var over = b.A.CreateLabel();
        b.Jcc(Condition, over);
        foreach (var p in Body) p.Emit(b);
        b.A.Label(ref over);
        b.A.nop();
    }

    public override IReadOnlyList<Piece> Children => Body;
    public override Piece WithChildren(IReadOnlyList<Piece> children) => this with { Body = children };
    public override IEnumerable<Piece> Shrink() => ShrinkList(Body).Select(x => this with { Body = x });
}

/// <summary>A forward direct jmp over dead code (the body is emitted, never run): a direct jmp, which the rules chain.</summary>
public sealed record Jump(IReadOnlyList<Piece> Skipped) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var over = b.A.CreateLabel();
        b.A.jmp(over);
        foreach (var p in Skipped) p.Emit(b);
        b.A.Label(ref over);
        b.A.nop();
    }

    // The skipped pieces are not its children: they never run, so splicing them in would change the program's meaning.
    public override IEnumerable<Piece> Shrink() => ShrinkList(Skipped).Select(x => this with { Skipped = x });
}

public enum LoopKind { DecJnz, Loop, JrcxzGuarded }

/// <summary>
/// A bounded backward loop around the body (rcx saved around it and around each round, so the body
/// may use rcx). Count is at least 1, except for the jrcxz-guarded form, which skips a count of 0.
/// </summary>
public sealed record Repeat(LoopKind Kind, int Count, IReadOnlyList<Piece> Body) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var a = b.A;
        var top = a.CreateLabel();
        var done = a.CreateLabel();
        a.push(rcx);
        a.mov(ecx, Count);
        if (Kind == LoopKind.JrcxzGuarded) a.jrcxz(done);
        a.Label(ref top);
        a.push(rcx);
        foreach (var p in Body) p.Emit(b);
        a.pop(rcx);
        if (Kind == LoopKind.DecJnz) { a.dec(ecx); a.jnz(top); }
        else a.loop(top);
        a.Label(ref done);
        a.pop(rcx);
    }

    public override IReadOnlyList<Piece> Children => Body;
    public override Piece WithChildren(IReadOnlyList<Piece> children) => this with { Body = children };

    public override IEnumerable<Piece> Shrink()
    {
        if (Count > 1) yield return this with { Count = 1 };
        if (Kind != LoopKind.DecJnz) yield return this with { Kind = LoopKind.DecJnz, Count = Math.Max(1, Count) };
        foreach (var x in ShrinkList(Body)) yield return this with { Body = x };
    }
}

public enum CallKind
{
    /// <summary>call rel32.</summary>
    Direct,
    /// <summary>push two words; call f; f ends with ret 16.</summary>
    RetImm16,
    /// <summary>lea reg, [f]; call reg (every pool register).</summary>
    Register,
    /// <summary>call [r15 + slot] (a function table in the private page).</summary>
    MemoryBase,
    /// <summary>call [rip + slot].</summary>
    MemoryRip,
    /// <summary>jmp reg to a label (an indirect jump that continues after it).</summary>
    JumpRegister,
    /// <summary>jmp [r15 + slot + index * 8]: a switch table of two targets (the memory form with an index).</summary>
    JumpTable,
    /// <summary>call f; f runs its body and tail-calls g (jmp), which returns to f's caller.</summary>
    TailCall,
    /// <summary>call f with a depth in r14: f recurses (call f) until it reaches 0.</summary>
    Recursion,
}

/// <summary>A call (or indirect jump) of one of the forms the rules translate differently, to a function with the given body.</summary>
public sealed record Call(CallKind Kind, Register Reg, int Depth, IReadOnlyList<Piece> Body) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var a = b.A;
        var reg = new AssemblerRegister64(Pool.Resize(Reg, 8));
        Label Plain() => b.Function(f => f.Body(Body).Ret());
        switch (Kind)
        {
            case CallKind.Direct:
                a.call(Plain());
                break;
            case CallKind.RetImm16:
                a.push(rax);
                a.push(rax);
                a.call(b.Function(f => { f.Body(Body); f.A.ret(16); }));
                break;
            case CallKind.Register:
                a.lea(reg, __[Plain()]);
                a.call(reg);
                break;
            case CallKind.MemoryBase:
            {
                var f = Plain();
                if (b.PointerTo(f) is ulong at) a.call(__qword_ptr[r15 + (int)at]);
                else a.call(f);
                break;
            }
            case CallKind.MemoryRip:
            {
                // Every vCPU's page holds the same pointer: the RIP-relative load reads vCPU 0's.
                var f = Plain();
                if (b.PointerTo(f) is ulong at) a.AddInstruction(Instruction.Create(Code.Call_rm64, new MemoryOperand(Register.RIP, (long)(Layout.Private(0) + at))));
                else a.call(f);
                break;
            }
            case CallKind.JumpRegister:
            {
                var next = a.CreateLabel();
                a.lea(reg, __[next]);
                a.jmp(reg);
                foreach (var p in Body) p.Emit(b); // skipped: the jump lands after it
                a.Label(ref next);
                a.nop();
                break;
            }
            case CallKind.JumpTable:
            {
                var t0 = a.CreateLabel(); var t1 = a.CreateLabel(); var done = a.CreateLabel();
                if (b.TableOf(t0, t1) is not ulong at)
                {
                    a.call(Plain());
                    break;
                }
                a.push(reg);
                a.mov(reg, Depth & 1);
                a.jmp(__qword_ptr[r15 + reg * 8 + (int)at]);
                b.Bind(ref t0);
                a.pop(reg);
                foreach (var p in Body) p.Emit(b);
                a.jmp(done);
                b.Bind(ref t1);
                a.pop(reg);
                a.Label(ref done);
                a.nop();
                break;
            }
            case CallKind.TailCall:
            {
                var g = Plain();
                a.call(b.Function(f => { f.Body([]); f.A.jmp(g); }));
                break;
            }
            case CallKind.Recursion:
            {
                a.push(r14);
                a.mov(r14d, Math.Max(1, Depth));
                Label self = default;
                self = b.Function(f =>
                {
                    var bottom = f.A.CreateLabel();
                    f.A.dec(r14d);
                    f.A.jz(bottom);
                    f.A.call(self);
                    f.A.Label(ref bottom);
                    f.Body(Body).Ret();
                });
                a.call(self);
                a.pop(r14);
                break;
            }
        }
    }

    public override IReadOnlyList<Piece> Children => Body;
    public override Piece WithChildren(IReadOnlyList<Piece> children) => this with { Body = children };

    public override IEnumerable<Piece> Shrink()
    {
        if (Kind != CallKind.Direct) yield return this with { Kind = CallKind.Direct };
        if (Depth > 1) yield return this with { Depth = 1 };
        foreach (var x in ShrinkList(Body)) yield return this with { Body = x };
    }
}

/// <summary>
/// A frame of locals on the stack (sub rsp; ops whose memory operands are [rsp + disp] inside it;
/// add rsp): translated code must see its stack data where native code does, however the rules
/// keep their scratch below RSP.
/// </summary>
public sealed record StackFrame(int Bytes, IReadOnlyList<Op> Ops) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        // Initialized first (the locals are compared: uninitialized stack is whatever ran before).
        b.A.sub(rsp, Bytes);
        for (int at = 0; at < Bytes; at += 8) b.A.mov(__qword_ptr[rsp + at], at + 1);
        foreach (var op in Ops) op.Emit(b);
        b.A.add(rsp, Bytes);
    }

    public override IEnumerable<Piece> Shrink()
    {
        for (int i = 0; i < Ops.Count; i++) yield return this with { Ops = Ops.Where((_, j) => j != i).ToArray() };
        for (int i = 0; i < Ops.Count; i++)
            foreach (var s in Ops[i].Shrink().OfType<Op>())
            {
                var copy = Ops.ToArray();
                copy[i] = s;
                yield return this with { Ops = copy };
            }
    }
}

/// <summary>
/// Plain (unlocked) accesses to the shared page's upper half: a store of a value every vCPU stores
/// alike (the same piece runs on each), or a load into r14 that is dropped (r14 saved around it), so
/// the final state does not depend on the interleaving.
/// </summary>
public sealed record SharedPlain(int Word, long Value, bool Store) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var at = new MemoryOperand(Register.RIP, (long)(Layout.Shared + Layout.SharedPlainOffset + (ulong)(Word % 64 * 8)));
        if (Store)
        {
            b.A.AddInstruction(Instruction.Create(Code.Mov_rm64_imm32, at, (int)Value));
            return;
        }
        b.A.push(r14);
        b.A.AddInstruction(Instruction.Create(Code.Mov_r64_rm64, Register.R14, at));
        b.A.pop(r14);
    }

    public override IEnumerable<Piece> Shrink() { if (Word != 0) yield return this with { Word = 0 }; }
}

/// <summary>
/// Indirect calls (through Reg) to Count functions that alias in the jumptable (same level-1 entry,
/// same level-2 group: <see cref="Layout.AliasFunction"/>), Rounds times in turn: the first round
/// misses and fills both levels, later ones conflict in level 1 and hit level 2 at each probe position.
/// </summary>
public sealed record AliasedCalls(Register Reg, int Count, int Rounds, int Group) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var reg = new AssemblerRegister64(Pool.Resize(Reg, 8));
        var targets = Enumerable.Range(0, Count).Select(j => b.AliasFunction(Group, j)).ToArray();
        for (int r = 0; r < Rounds; r++)
            foreach (ulong t in targets)
            {
                b.A.mov(reg, t);
                b.A.call(reg);
            }
    }

    public override IEnumerable<Piece> Shrink()
    {
        if (Rounds > 1) yield return this with { Rounds = 1 };
        if (Count > 1) yield return this with { Count = Count - 1 };
        if (Group != 0) yield return this with { Group = 0 };
    }
}

/// <summary>
/// A load or store through an unmapped address, with an exception-table entry whose fixup is the
/// next instruction: the #PF handler finds the fixup (in the kernel's table natively, in the DBT's
/// under translation) and resumes there.
/// </summary>
public sealed record Fault(Register Reg, int Size, bool Store) : Piece
{
    internal override void Emit(ProgramBuilder b)
    {
        var a = b.A;
        var reg = Pool.Resize(Reg, Size);
        a.push(r14);
        a.mov(r14, Layout.Unmapped);
        var mem = new MemoryOperand(Register.R14);
        Code code = (Size, Store) switch
        {
            (1, false) => Code.Mov_r8_rm8, (2, false) => Code.Mov_r16_rm16, (4, false) => Code.Mov_r32_rm32, (_, false) => Code.Mov_r64_rm64,
            (1, true) => Code.Mov_rm8_r8, (2, true) => Code.Mov_rm16_r16, (4, true) => Code.Mov_rm32_r32, (_, true) => Code.Mov_rm64_r64,
        };
        var fault = a.CreateLabel();
        var fixup = a.CreateLabel();
        b.Bind(ref fault);
        a.AddInstruction(Store ? Instruction.Create(code, mem, reg) : Instruction.Create(code, reg, mem));
        b.Bind(ref fixup);
        a.pop(r14);
        b.Fixup(fault, fixup);
    }

    public override bool Faults => true;

    public override IEnumerable<Piece> Shrink() { if (Size != 8) yield return this with { Size = 8 }; if (Store) yield return this with { Store = false }; }
}

/// <summary>The pool of registers generated code may write: every GPR but RSP, r14 (pieces' own scratch, saved around use) and r15 (the private page).</summary>
public static class Pool
{
    public static readonly int[] Numbers = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13];

    /// <summary>GPR number n at a size: al cl dl bl spl bpl sil dil r8b..; ax..; eax..; rax...</summary>
    public static Register Gpr(int n, int size) => size switch
    {
        1 => n < 4 ? Register.AL + n : n < 8 ? Register.SPL + (n - 4) : Register.R8L + (n - 8),
        2 => Register.AX + n,
        4 => Register.EAX + n,
        _ => Register.RAX + n,
    };

    public static Register Resize(Register r, int size) => Gpr(r.GetFullRegister().GetNumber(), size);

    public static Register Random(Rng r, int size) => Gpr(r.Pick(Numbers), size);
}
