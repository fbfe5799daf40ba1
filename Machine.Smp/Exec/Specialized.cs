using System.Runtime.CompilerServices;
using Harness.Machine.Control;
using Harness.Machine.Cpu;
using Harness.Machine.Decode;
using Iced.Intel;

namespace Harness.Machine.Exec;

// Fast paths for the hottest forms (32/64-bit ALU, mov, jcc): generic handlers instantiated over
// struct type parameters with static abstract members, so the JIT compiles one switch-free
// handler per (operation, size). They replace the family handler after decode and must compute
// exactly what it computes: the differential tests run whichever handler decode picks.

internal unsafe interface ISize
{
    static abstract int Log { get; }
    static abstract ulong Get(CpuState* s, int r);
    static abstract void Set(CpuState* s, int r, ulong v);
    static abstract ulong Read(Vcpu c, ulong ea);
    static abstract void Write(Vcpu c, ulong ea, ulong v);
}

internal unsafe struct S32 : ISize
{
    public static int Log => 2;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Get(CpuState* s, int r) => (uint)s->Gpr[r];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Set(CpuState* s, int r, ulong v) => s->Gpr[r] = (uint)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Read(Vcpu c, ulong ea) => c.Read32(ea);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Write(Vcpu c, ulong ea, ulong v) => c.Write32(ea, (uint)v);
}

internal unsafe struct S64 : ISize
{
    public static int Log => 3;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Get(CpuState* s, int r) => s->Gpr[r];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Set(CpuState* s, int r, ulong v) => s->Gpr[r] = v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Read(Vcpu c, ulong ea) => c.Read64(ea);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Write(Vcpu c, ulong ea, ulong v) => c.Write64(ea, v);
}

internal unsafe interface IAluOp
{
    static abstract bool Writes { get; }
    static abstract ulong Do(CpuState* s, int log, ulong a, ulong b);
}

internal static unsafe class Lazy
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Record(CpuState* s, FlagOp op, int log, ulong r, ulong a, ulong b)
    {
        s->LazyOp = (int)op; s->LazySize = log; s->LazyRes = r; s->LazySrc1 = a; s->LazySrc2 = b;
        return r;
    }
}

internal unsafe struct AddOp : IAluOp { public static bool Writes => true; [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Do(CpuState* s, int log, ulong a, ulong b) => Lazy.Record(s, FlagOp.Add, log, a + b, a, b); }
internal unsafe struct SubOp : IAluOp { public static bool Writes => true; [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Do(CpuState* s, int log, ulong a, ulong b) => Lazy.Record(s, FlagOp.Sub, log, a - b, a, b); }
internal unsafe struct CmpOp : IAluOp { public static bool Writes => false; [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Do(CpuState* s, int log, ulong a, ulong b) => Lazy.Record(s, FlagOp.Sub, log, a - b, a, b); }
internal unsafe struct AndOp : IAluOp { public static bool Writes => true; [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Do(CpuState* s, int log, ulong a, ulong b) => Lazy.Record(s, FlagOp.Logic, log, a & b, a, b); }
internal unsafe struct TestOp : IAluOp { public static bool Writes => false; [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Do(CpuState* s, int log, ulong a, ulong b) => Lazy.Record(s, FlagOp.Logic, log, a & b, a, b); }
internal unsafe struct OrOp : IAluOp { public static bool Writes => true; [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Do(CpuState* s, int log, ulong a, ulong b) => Lazy.Record(s, FlagOp.Logic, log, a | b, a, b); }
internal unsafe struct XorOp : IAluOp { public static bool Writes => true; [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Do(CpuState* s, int log, ulong a, ulong b) => Lazy.Record(s, FlagOp.Logic, log, a ^ b, a, b); }

internal static unsafe class Specialized
{
    private static readonly Dictionary<(Mnemonic, Form, int), nint> table = Build();

    /// <summary>Replaces x.Exec with a specialized handler when one exists for this exact form.</summary>
    public static void Apply(ref Insn x, in Instruction ins)
    {
        if (ins.FlowControl == FlowControl.ConditionalBranch && ins.ConditionCode != ConditionCode.None && ins.Op0Kind == OpKind.NearBranch64)
        {
            if (JccTable[x.Sub] != 0) x.Exec = (delegate*<Vcpu, ref Insn, void>)JccTable[x.Sub];
            return;
        }
        if (x.Has(InsnFlags.Lock) || x.SizeLog < 2) return;
        for (int i = 0; i < ins.OpCount; i++)
            if (ins.GetOpKind(i) == OpKind.Register && !ins.GetOpRegister(i).IsGPR()) return; // mov to/from CRn or segment registers
        if (table.TryGetValue((ins.Mnemonic, OpTable.FormOf(x, ins), x.SizeLog), out var h)) x.Exec = (delegate*<Vcpu, ref Insn, void>)h;
    }

    private static Dictionary<(Mnemonic, Form, int), nint> Build()
    {
        var t = new Dictionary<(Mnemonic, Form, int), nint>();
        Alu<AddOp>(t, Mnemonic.Add);
        Alu<SubOp>(t, Mnemonic.Sub);
        Alu<CmpOp>(t, Mnemonic.Cmp);
        Alu<AndOp>(t, Mnemonic.And);
        Alu<TestOp>(t, Mnemonic.Test);
        Alu<OrOp>(t, Mnemonic.Or);
        Alu<XorOp>(t, Mnemonic.Xor);
        Mov<S32>(t); Mov<S64>(t);
        return t;
    }

    private static void Alu<O>(Dictionary<(Mnemonic, Form, int), nint> t, Mnemonic m) where O : struct, IAluOp
    {
        t[(m, Form.RR, 2)] = (nint)(delegate*<Vcpu, ref Insn, void>)&RR<O, S32>;
        t[(m, Form.RR, 3)] = (nint)(delegate*<Vcpu, ref Insn, void>)&RR<O, S64>;
        t[(m, Form.RI, 2)] = (nint)(delegate*<Vcpu, ref Insn, void>)&RI<O, S32>;
        t[(m, Form.RI, 3)] = (nint)(delegate*<Vcpu, ref Insn, void>)&RI<O, S64>;
        t[(m, Form.RM, 2)] = (nint)(delegate*<Vcpu, ref Insn, void>)&RM<O, S32>;
        t[(m, Form.RM, 3)] = (nint)(delegate*<Vcpu, ref Insn, void>)&RM<O, S64>;
        t[(m, Form.MR, 2)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MR<O, S32>;
        t[(m, Form.MR, 3)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MR<O, S64>;
        t[(m, Form.MI, 2)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MI<O, S32>;
        t[(m, Form.MI, 3)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MI<O, S64>;
    }

    private static void Mov<Z>(Dictionary<(Mnemonic, Form, int), nint> t) where Z : struct, ISize
    {
        t[(Mnemonic.Mov, Form.RR, Z.Log)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MovRR<Z>;
        t[(Mnemonic.Mov, Form.RI, Z.Log)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MovRI<Z>;
        t[(Mnemonic.Mov, Form.RM, Z.Log)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MovRM<Z>;
        t[(Mnemonic.Mov, Form.MR, Z.Log)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MovMR<Z>;
        t[(Mnemonic.Mov, Form.MI, Z.Log)] = (nint)(delegate*<Vcpu, ref Insn, void>)&MovMI<Z>;
        t[(Mnemonic.Lea, Form.RM, Z.Log)] = (nint)(delegate*<Vcpu, ref Insn, void>)&Lea<Z>;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Load<Z>(Vcpu c, ulong ea) where Z : struct, ISize
    {
        if (Seams.Points) c.Control.Point(c, PointKind.Load, ea);
        return Z.Read(c, ea);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store<Z>(Vcpu c, ulong ea, ulong v) where Z : struct, ISize
    {
        if (Seams.Points) c.Control.Point(c, PointKind.Store, ea);
        Z.Write(c, ea, v);
    }

    private static void RR<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        var s = c.S;
        ulong r = O.Do(s, Z.Log, Z.Get(s, x.R0), Z.Get(s, x.R1));
        if (O.Writes) Z.Set(s, x.R0, r);
    }

    private static void RI<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        var s = c.S;
        ulong r = O.Do(s, Z.Log, Z.Get(s, x.R0), x.Imm);
        if (O.Writes) Z.Set(s, x.R0, r);
    }

    private static void RM<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        ulong b = Load<Z>(c, c.Ea(ref x));
        var s = c.S;
        ulong r = O.Do(s, Z.Log, Z.Get(s, x.R0), b);
        if (O.Writes) Z.Set(s, x.R0, r);
    }

    private static void MR<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        ulong ea = c.Ea(ref x);
        ulong a = Load<Z>(c, ea);
        ulong r = O.Do(c.S, Z.Log, a, Z.Get(c.S, x.R0));
        if (O.Writes) Store<Z>(c, ea, r);
    }

    private static void MI<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        ulong ea = c.Ea(ref x);
        ulong a = Load<Z>(c, ea);
        ulong r = O.Do(c.S, Z.Log, a, x.Imm);
        if (O.Writes) Store<Z>(c, ea, r);
    }

    private static void MovRR<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, Z.Get(c.S, x.R1));
    private static void MovRI<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, x.Imm);
    private static void MovRM<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, Load<Z>(c, c.Ea(ref x)));
    private static void MovMR<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Store<Z>(c, c.Ea(ref x), Z.Get(c.S, x.R0));
    private static void MovMI<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Store<Z>(c, c.Ea(ref x), x.Imm);
    private static void Lea<Z>(Vcpu c, ref Insn x) where Z : struct, ISize => Z.Set(c.S, x.R0, c.Ea(ref x));

    // ---- jcc: one handler per condition, with the cmp/sub and logic cases read straight from the lazy record ----

    private static readonly nint[] JccTable = BuildJcc();

    private static nint[] BuildJcc()
    {
        var t = new nint[16];
        t[2] = (nint)(delegate*<Vcpu, ref Insn, void>)&Jb;
        t[3] = (nint)(delegate*<Vcpu, ref Insn, void>)&Jae;
        t[4] = (nint)(delegate*<Vcpu, ref Insn, void>)&Je;
        t[5] = (nint)(delegate*<Vcpu, ref Insn, void>)&Jne;
        t[6] = (nint)(delegate*<Vcpu, ref Insn, void>)&Jbe;
        t[7] = (nint)(delegate*<Vcpu, ref Insn, void>)&Ja;
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Zero(CpuState* s) => s->LazyOp != 0 ? (s->LazyRes & Vcpu.SizeMask(s->LazySize)) == 0 : (s->RflagsRaw & Rflags.ZF) != 0;

    private static void Je(Vcpu c, ref Insn x) { var s = c.S; s->Rip = Zero(s) ? x.Imm : x.NextIp; }
    private static void Jne(Vcpu c, ref Insn x) { var s = c.S; s->Rip = Zero(s) ? x.NextIp : x.Imm; }
    private static void Jb(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(2) ? x.Imm : x.NextIp; }
    private static void Jae(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(3) ? x.Imm : x.NextIp; }
    private static void Jbe(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(6) ? x.Imm : x.NextIp; }
    private static void Ja(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(7) ? x.Imm : x.NextIp; }
}
