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
    public const byte Rol = 0, Ror = 1, Rcl = 2, Rcr = 3, Shl = 4, Shr = 5, Sal = 6, Sar = 7, Shld = 8, Shrd = 9;

    public static void Install()
    {
        OpTable.Add(Mnemonic.Rol, &Build, Rol);
        OpTable.Add(Mnemonic.Ror, &Build, Ror);
        OpTable.Add(Mnemonic.Rcl, &Build, Rcl);
        OpTable.Add(Mnemonic.Rcr, &Build, Rcr);
        OpTable.Add(Mnemonic.Shl, &Build, Shl);
        OpTable.Add(Mnemonic.Sal, &Build, Shl);
        OpTable.Add(Mnemonic.Shr, &Build, Shr);
        OpTable.Add(Mnemonic.Sar, &Build, Sar);
        OpTable.Add(Mnemonic.Shld, &BuildDouble, Shld);
        OpTable.Add(Mnemonic.Shrd, &BuildDouble, Shrd);
    }

    private const InsnFlags CountInCl = InsnFlags.ImmSecond; // reused bit: the count comes from CL

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

    /// <summary>Shifts or rotates a by n (already masked, non-zero) and sets the flags.</summary>
    internal static ulong Do(Vcpu c, int kind, int log, ulong a, int n)
    {
        int bits = 8 << log;
        ulong mask = Vcpu.SizeMask(log), sign = Vcpu.SignBit(log);
        a &= mask;
        ulong r;
        bool cf, of;
        switch (kind)
        {
            // shl/shr/sar record lazy flags (Vcpu.Flags.cs computes CF/OF from operand and count).
            case Shl:
                r = n < 64 ? (a << n) & mask : 0;
                c.SetLazy(FlagOp.Shl, log, r, a, (ulong)n);
                return r;
            case Shr:
                r = a >> n;
                c.SetLazy(FlagOp.Shr, log, r, a, (ulong)n);
                return r;
            case Sar:
            {
                int sh = 64 - bits;
                long sa = (long)(a << sh) >> sh;
                r = (ulong)(sa >> Math.Min(n, bits - 1)) & mask;
                c.SetLazy(FlagOp.Sar, log, r, a, (ulong)n);
                return r;
            }
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
