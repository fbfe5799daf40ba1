using System.Runtime.CompilerServices;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>
/// add or adc sbb and sub xor cmp test; inc dec neg not. Flags are lazy. Each operation is one
/// struct below (its result and its lazy-flag record, the only definition); every form and size
/// is the generic handler instantiated over it, and xadd, cmpxchg and cmps/scas call the same structs.
/// </summary>
internal static unsafe class Alu
{
    public static void Install()
    {
        OpTable.Add(Mnemonic.Add, Binary<AddOp>());
        OpTable.Add(Mnemonic.Or, Binary<OrOp>());
        OpTable.Add(Mnemonic.Adc, Binary<AdcOp>());
        OpTable.Add(Mnemonic.Sbb, Binary<SbbOp>());
        OpTable.Add(Mnemonic.And, Binary<AndOp>());
        OpTable.Add(Mnemonic.Sub, Binary<SubOp>());
        OpTable.Add(Mnemonic.Xor, Binary<XorOp>());
        OpTable.Add(Mnemonic.Cmp, Binary<CmpOp>());
        OpTable.Add(Mnemonic.Test, Binary<TestOp>());
        OpTable.Add(Mnemonic.Inc, Unary<IncOp>());
        OpTable.Add(Mnemonic.Dec, Unary<DecOp>());
        OpTable.Add(Mnemonic.Neg, Unary<NegOp>());
        OpTable.Add(Mnemonic.Not, Unary<NotOp>());
    }

    // cmp and test write nothing: no lock-prefixed form (the decoder rejects lock on them anyway).
    private static FormMap Binary<O>() where O : struct, IAluOp
    {
        var m = new FormMap()
            .On(Form.RR, &RR<O, S8>, &RR<O, S16>, &RR<O, S32>, &RR<O, S64>)
            .On(Form.RI, &RI<O, S8>, &RI<O, S16>, &RI<O, S32>, &RI<O, S64>)
            .On(Form.RM, &RM<O, S8>, &RM<O, S16>, &RM<O, S32>, &RM<O, S64>)
            .On(Form.MR, &MR<O, S8>, &MR<O, S16>, &MR<O, S32>, &MR<O, S64>)
            .On(Form.MI, &MI<O, S8>, &MI<O, S16>, &MI<O, S32>, &MI<O, S64>);
        if (O.Writes)
            m.Locked(Form.MR, &LockedMR<O, S8>, &LockedMR<O, S16>, &LockedMR<O, S32>, &LockedMR<O, S64>)
             .Locked(Form.MI, &LockedMI<O, S8>, &LockedMI<O, S16>, &LockedMI<O, S32>, &LockedMI<O, S64>);
        return m;
    }

    private static FormMap Unary<O>() where O : struct, IUnaryOp => new FormMap()
        .On(Form.R, &UnaryR<O, S8>, &UnaryR<O, S16>, &UnaryR<O, S32>, &UnaryR<O, S64>)
        .On(Form.M, &UnaryM<O, S8>, &UnaryM<O, S16>, &UnaryM<O, S32>, &UnaryM<O, S64>)
        .Locked(Form.M, &LockedUnaryM<O, S8>, &LockedUnaryM<O, S16>, &LockedUnaryM<O, S32>, &LockedUnaryM<O, S64>);

    private static void RR<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        var s = c.S;
        ulong r = O.Do(c, Z.Log, Z.Get(s, x.R0), Z.Get(s, x.R1));
        if (O.Writes) Z.Set(s, x.R0, r);
    }

    private static void RI<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        var s = c.S;
        ulong r = O.Do(c, Z.Log, Z.Get(s, x.R0), x.Imm);
        if (O.Writes) Z.Set(s, x.R0, r);
    }

    private static void RM<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        ulong b = Data.Load<Z>(c, c.Ea(ref x));
        var s = c.S;
        ulong r = O.Do(c, Z.Log, Z.Get(s, x.R0), b);
        if (O.Writes) Z.Set(s, x.R0, r);
    }

    private static void MR<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        ulong ea = c.Ea(ref x);
        ulong a = Data.Load<Z>(c, ea);
        ulong r = O.Do(c, Z.Log, a, Z.Get(c.S, x.R0));
        if (O.Writes) Data.Store<Z>(c, ea, r);
    }

    private static void MI<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize
    {
        ulong ea = c.Ea(ref x);
        ulong a = Data.Load<Z>(c, ea);
        ulong r = O.Do(c, Z.Log, a, x.Imm);
        if (O.Writes) Data.Store<Z>(c, ea, r);
    }

    private static ulong NewMR<O, Z>(Vcpu c, ref Insn x, ulong a, ulong _) where O : struct, IAluOp where Z : struct, ISize => O.Do(c, Z.Log, a, Z.Get(c.S, x.R0));
    private static ulong NewMI<O, Z>(Vcpu c, ref Insn x, ulong a, ulong _) where O : struct, IAluOp where Z : struct, ISize => O.Do(c, Z.Log, a, x.Imm);
    private static void LockedMR<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize => Atomics.Rmw(c, ref x, c.Ea(ref x), &NewMR<O, Z>, 0);
    private static void LockedMI<O, Z>(Vcpu c, ref Insn x) where O : struct, IAluOp where Z : struct, ISize => Atomics.Rmw(c, ref x, c.Ea(ref x), &NewMI<O, Z>, 0);

    private static void UnaryR<O, Z>(Vcpu c, ref Insn x) where O : struct, IUnaryOp where Z : struct, ISize =>
        Z.Set(c.S, x.R0, O.Do(c, Z.Log, Z.Get(c.S, x.R0)));

    private static void UnaryM<O, Z>(Vcpu c, ref Insn x) where O : struct, IUnaryOp where Z : struct, ISize
    {
        ulong ea = c.Ea(ref x);
        Data.Store<Z>(c, ea, O.Do(c, Z.Log, Data.Load<Z>(c, ea)));
    }

    private static ulong NewUnary<O, Z>(Vcpu c, ref Insn x, ulong a, ulong _) where O : struct, IUnaryOp where Z : struct, ISize => O.Do(c, Z.Log, a);
    private static void LockedUnaryM<O, Z>(Vcpu c, ref Insn x) where O : struct, IUnaryOp where Z : struct, ISize => Atomics.Rmw(c, ref x, c.Ea(ref x), &NewUnary<O, Z>, 0);
}

/// <summary>A two-operand ALU operation: its result (unmasked) and the lazy-flag record it leaves.</summary>
internal interface IAluOp
{
    /// <summary>False for cmp and test: flags only.</summary>
    static abstract bool Writes { get; }
    static abstract ulong Do(Vcpu c, int log, ulong a, ulong b);
}

internal interface IUnaryOp
{
    static abstract ulong Do(Vcpu c, int log, ulong a);
}

internal struct AddOp : IAluOp
{
    public static bool Writes => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b) => c.SetLazy(FlagOp.Add, log, a + b, a, b);
}

internal struct SubOp : IAluOp
{
    public static bool Writes => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b) => c.SetLazy(FlagOp.Sub, log, a - b, a, b);
}

internal struct CmpOp : IAluOp
{
    public static bool Writes => false;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b) => SubOp.Do(c, log, a, b);
}

internal struct AndOp : IAluOp
{
    public static bool Writes => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b) => c.SetLazy(FlagOp.Logic, log, a & b, a, b);
}

internal struct TestOp : IAluOp
{
    public static bool Writes => false;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b) => AndOp.Do(c, log, a, b);
}

internal struct OrOp : IAluOp
{
    public static bool Writes => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b) => c.SetLazy(FlagOp.Logic, log, a | b, a, b);
}

internal struct XorOp : IAluOp
{
    public static bool Writes => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b) => c.SetLazy(FlagOp.Logic, log, a ^ b, a, b);
}

internal struct AdcOp : IAluOp
{
    public static bool Writes => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b)
    {
        ulong cf = c.CF ? 1UL : 0;
        return c.SetLazy(FlagOp.Adc, log, a + b + cf, a, b, cf);
    }
}

internal struct SbbOp : IAluOp
{
    public static bool Writes => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, ulong b)
    {
        ulong cf = c.CF ? 1UL : 0;
        return c.SetLazy(FlagOp.Sbb, log, a - b - cf, a, b, cf);
    }
}

// inc and dec keep CF: the record carries it in.
internal struct IncOp : IUnaryOp
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a) => c.SetLazy(FlagOp.Inc, log, a + 1, a, 1, c.CF ? 1UL : 0);
}

internal struct DecOp : IUnaryOp
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a) => c.SetLazy(FlagOp.Dec, log, a - 1, a, 1, c.CF ? 1UL : 0);
}

internal struct NegOp : IUnaryOp
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a) => c.SetLazy(FlagOp.Sub, log, 0 - a, 0, a);
}

internal struct NotOp : IUnaryOp
{
    public static ulong Do(Vcpu c, int log, ulong a) => ~a; // no flags
}
