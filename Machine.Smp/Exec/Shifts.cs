using System.Runtime.CompilerServices;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>
/// rol ror rcl rcr shl/sal shr sar, shld shrd. Flags are computed eagerly. Undefined results
/// (fixed choices, see docs/isa.md): AF = 0; OF for counts above 1 follows the count-1 formula
/// applied to the final result; CF for shl/shr counts at or above the operand width is the last
/// bit the 64-bit computation shifts out.
/// </summary>
internal static unsafe class Shifts
{
    public const byte Rol = 0, Ror = 1, Rcl = 2, Rcr = 3, Shld = 8, Shrd = 9;

    public static void Install()
    {
        OpTable.Add(Mnemonic.Rol, &Build, Rol);
        OpTable.Add(Mnemonic.Ror, &Build, Ror);
        OpTable.Add(Mnemonic.Rcl, &Build, Rcl);
        OpTable.Add(Mnemonic.Rcr, &Build, Rcr);
        // The shifts with lazy flags, one specialization per (operation, size); the count is an
        // immediate (RI, MI: including the implicit 1) or CL (RR, MR: the extraction reads CL as a register).
        OpTable.Add(Mnemonic.Shl, Lazy<ShlOp>());
        OpTable.Add(Mnemonic.Sal, Lazy<ShlOp>());
        OpTable.Add(Mnemonic.Shr, Lazy<ShrOp>());
        OpTable.Add(Mnemonic.Sar, Lazy<SarOp>());
        OpTable.Add(Mnemonic.Shld, &BuildDouble, Shld);
        OpTable.Add(Mnemonic.Shrd, &BuildDouble, Shrd);
    }

    private const InsnFlags CountInCl = InsnFlags.ImmSecond; // reused bit: the count comes from CL

    private static FormMap Lazy<K>() where K : struct, IShiftOp => new FormMap()
        .On(Form.RI, &ByImmR<K, S8>, &ByImmR<K, S16>, &ByImmR<K, S32>, &ByImmR<K, S64>)
        .On(Form.RR, &ByClR<K, S8>, &ByClR<K, S16>, &ByClR<K, S32>, &ByClR<K, S64>)
        .On(Form.MI, &ByImmM<K, S8>, &ByImmM<K, S16>, &ByImmM<K, S32>, &ByImmM<K, S64>)
        .On(Form.MR, &ByClM<K, S8>, &ByClM<K, S16>, &ByClM<K, S32>, &ByClM<K, S64>);

    // The count masked as the hardware does: 6 bits for 64-bit operands, else 5.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Masked<Z>(ulong count) where Z : struct, ISize => (int)count & (Z.Log == 3 ? 0x3F : 0x1F);

    // A zero count leaves the flags alone, but a register destination is still written (a 32-bit
    // one zero-extended), as by every 32-bit operation.
    private static void ByImmR<K, Z>(Vcpu c, ref Insn x) where K : struct, IShiftOp where Z : struct, ISize
    {
        int n = Masked<Z>(x.Imm);
        ulong a = Z.Get(c.S, x.R0);
        Z.Set(c.S, x.R0, n == 0 ? a : K.Do(c, Z.Log, a, n));
    }

    private static void ByClR<K, Z>(Vcpu c, ref Insn x) where K : struct, IShiftOp where Z : struct, ISize
    {
        int n = Masked<Z>(c.S->Gpr[Reg.Rcx]);
        ulong a = Z.Get(c.S, x.R0);
        Z.Set(c.S, x.R0, n == 0 ? a : K.Do(c, Z.Log, a, n));
    }

    private static void ByImmM<K, Z>(Vcpu c, ref Insn x) where K : struct, IShiftOp where Z : struct, ISize
    {
        ulong ea = c.Ea(ref x);
        int n = Masked<Z>(x.Imm);
        ulong a = Data.Load<Z>(c, ea);
        if (n != 0) Data.Store<Z>(c, ea, K.Do(c, Z.Log, a, n));
    }

    private static void ByClM<K, Z>(Vcpu c, ref Insn x) where K : struct, IShiftOp where Z : struct, ISize
    {
        ulong ea = c.Ea(ref x);
        int n = Masked<Z>(c.S->Gpr[Reg.Rcx]);
        ulong a = Data.Load<Z>(c, ea);
        if (n != 0) Data.Store<Z>(c, ea, K.Do(c, Z.Log, a, n));
    }

    private static bool Build(ref Insn x, in Instruction ins)
    {
        bool mem = x.Has(InsnFlags.MemOperand);
        if (ins.GetOpKind(1) == OpKind.Register) x.Flags |= CountInCl;
        x.Exec = mem ? &ShiftM : &ShiftR;
        return true;
    }

    private static bool BuildDouble(ref Insn x, in Instruction ins)
    {
        if (ins.GetOpKind(2) == OpKind.Register) x.Flags |= CountInCl;
        // Operands() put the registers in order: for the memory form R0 is the source register.
        x.Exec = x.Has(InsnFlags.MemOperand) ? &DoubleM : &DoubleR;
        return true;
    }

    private static int Count(Vcpu c, ref Insn x, int log)
    {
        int raw = x.Has(CountInCl) ? (byte)c.S->Gpr[Reg.Rcx] : (byte)x.Imm;
        return raw & (log == 3 ? 0x3F : 0x1F);
    }

    private static void ShiftR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        int n = Count(c, ref x, log);
        ulong a = c.GetReg(x.R0, log);
        c.SetReg(x.R0, log, n == 0 ? a : Do(c, x.Sub, log, a, n));
    }

    private static void ShiftM(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong ea = c.Ea(ref x);
        int n = Count(c, ref x, log);
        ulong a = c.Load(ea, log);
        if (n == 0) return;
        c.Store(ea, log, Do(c, x.Sub, log, a, n));
    }

    /// <summary>Rotates a by n (already masked, non-zero) and sets the flags (rol ror rcl rcr; the shifts are the structs below).</summary>
    internal static ulong Do(Vcpu c, int kind, int log, ulong a, int n)
    {
        int bits = 8 << log;
        ulong mask = Vcpu.SizeMask(log), sign = Vcpu.SignBit(log);
        a &= mask;
        ulong r;
        bool cf, of;
        switch (kind)
        {
            case Rol:
            {
                int k = n % bits;
                r = k == 0 ? a : ((a << k) | (a >> (bits - k))) & mask;
                cf = (r & 1) != 0;
                of = ((r & sign) != 0) ^ cf;
                c.SetArith(Rflags.CF | Rflags.OF, (cf ? Rflags.CF : 0) | (of ? Rflags.OF : 0));
                return r;
            }
            case Ror:
            {
                int k = n % bits;
                r = k == 0 ? a : ((a >> k) | (a << (bits - k))) & mask;
                cf = (r & sign) != 0;
                of = cf ^ ((r & (sign >> 1)) != 0);
                c.SetArith(Rflags.CF | Rflags.OF, (cf ? Rflags.CF : 0) | (of ? Rflags.OF : 0));
                return r;
            }
            case Rcl:
            {
                int k = log <= 1 ? n % (bits + 1) : n;
                bool carry = c.CF;
                r = a;
                for (int i = 0; i < k; i++)
                {
                    bool outBit = (r & sign) != 0;
                    r = ((r << 1) | (carry ? 1UL : 0)) & mask;
                    carry = outBit;
                }
                of = ((r & sign) != 0) ^ carry;
                c.SetArith(Rflags.CF | Rflags.OF, (carry ? Rflags.CF : 0) | (of ? Rflags.OF : 0));
                return r;
            }
            default: // Rcr
            {
                int k = log <= 1 ? n % (bits + 1) : n;
                bool carry = c.CF;
                r = a;
                for (int i = 0; i < k; i++)
                {
                    bool outBit = (r & 1) != 0;
                    r = (r >> 1) | (carry ? sign : 0);
                    carry = outBit;
                }
                // OF: the two top bits of the result differ (the count-1 definition, kept for all counts).
                of = ((r & sign) != 0) ^ ((r & (sign >> 1)) != 0);
                c.SetArith(Rflags.CF | Rflags.OF, (carry ? Rflags.CF : 0) | (of ? Rflags.OF : 0));
                return r;
            }
        }
    }

    private static void DoubleR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        int n = Count(c, ref x, log);
        ulong d = c.GetReg(x.R0, log);
        c.SetReg(x.R0, log, n == 0 ? d : Double(c, x.Sub, log, d, c.GetReg(x.R1, log), n));
    }

    private static void DoubleM(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong ea = c.Ea(ref x);
        int n = Count(c, ref x, log);
        ulong d = c.Load(ea, log);
        if (n == 0) return;
        c.Store(ea, log, Double(c, x.Sub, log, d, c.GetReg(x.R0, log), n));
    }

    /// <summary>shld/shrd. For 16-bit counts above 16 the result is undefined; we shift the 48-bit concatenation d:s:d as Intel hardware does.</summary>
    private static ulong Double(Vcpu c, int kind, int log, ulong d, ulong s, int n)
    {
        int bits = 8 << log;
        ulong mask = Vcpu.SizeMask(log), sign = Vcpu.SignBit(log);
        d &= mask; s &= mask;
        ulong r;
        bool cf;
        if (log == 1)
        {
            // 16-bit: counts up to 31 shift the 48-bit concatenation (d:s:d for shld, d:s:d reversed for shrd).
            if (kind == Shld)
            {
                ulong cat = (d << 32) | (s << 16) | d;
                ulong sh = cat << n;
                r = (sh >> 32) & mask;
                cf = ((sh >> 48) & 1) != 0;
            }
            else
            {
                ulong cat = d | (s << 16) | (d << 32);
                r = (cat >> n) & mask;
                cf = ((cat >> (n - 1)) & 1) != 0;
            }
        }
        else if (kind == Shld)
        {
            r = ((d << n) | (s >> (bits - n))) & mask;
            cf = ((d >> (bits - n)) & 1) != 0;
        }
        else
        {
            r = ((d >> n) | (s << (bits - n))) & mask;
            cf = ((d >> (n - 1)) & 1) != 0;
        }
        bool of = ((r ^ d) & sign) != 0;
        c.SetArith(Rflags.Arith, Vcpu.ZspOf(r, log) | (cf ? Rflags.CF : 0) | (of ? Rflags.OF : 0));
        return r;
    }
}

/// <summary>A shift with lazy flags: the result of a (masked to the operand size) shifted by n (masked, non-zero), and its flag record.</summary>
internal interface IShiftOp
{
    static abstract ulong Do(Vcpu c, int log, ulong a, int n);
}

// Vcpu.Flags.cs computes CF and OF from the operand and the count.
internal struct ShlOp : IShiftOp
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, int n)
    {
        ulong mask = Vcpu.SizeMask(log);
        a &= mask;
        return c.SetLazy(FlagOp.Shl, log, n < 64 ? (a << n) & mask : 0, a, (ulong)n);
    }
}

internal struct ShrOp : IShiftOp
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, int n)
    {
        a &= Vcpu.SizeMask(log);
        return c.SetLazy(FlagOp.Shr, log, a >> n, a, (ulong)n);
    }
}

internal struct SarOp : IShiftOp
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Do(Vcpu c, int log, ulong a, int n)
    {
        ulong mask = Vcpu.SizeMask(log);
        a &= mask;
        int bits = 8 << log, sh = 64 - bits;
        long sa = (long)(a << sh) >> sh;
        return c.SetLazy(FlagOp.Sar, log, (ulong)(sa >> Math.Min(n, bits - 1)) & mask, a, (ulong)n);
    }
}
