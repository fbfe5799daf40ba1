using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>
/// mul imul div idiv. Undefined flags (fixed choice): after mul/imul SF, ZF, PF come from the
/// low half of the result and AF = 0; div/idiv leave every flag unchanged.
/// </summary>
internal static unsafe class MulDiv
{
    public static void Install()
    {
        OpTable.Add(Mnemonic.Mul, new FormMap().On(Form.R, &MulR).On(Form.M, &MulM));
        // imul's two- and three-operand forms: RR/RM are imul r, r/m; RI/MI are imul r, r/m, imm.
        OpTable.Add(Mnemonic.Imul, new FormMap().On(Form.R, &ImulR).On(Form.M, &ImulM)
            .On(Form.RR, &Imul2R).On(Form.RM, &Imul2M).On(Form.RI, &Imul3R).On(Form.MI, &Imul3M));
        OpTable.Add(Mnemonic.Div, new FormMap().On(Form.R, &DivR).On(Form.M, &DivM));
        OpTable.Add(Mnemonic.Idiv, new FormMap().On(Form.R, &IdivR).On(Form.M, &IdivM));
    }

    private static ulong Src(Vcpu c, ref Insn x, bool mem) => mem ? c.Load(c.Ea(ref x), x.SizeLog) : c.GetReg(x.R0, x.SizeLog);

    private static void MulR(Vcpu c, ref Insn x) => WideMul(c, x.SizeLog, c.GetReg(x.R0, x.SizeLog), signed: false);
    private static void MulM(Vcpu c, ref Insn x) => WideMul(c, x.SizeLog, Src(c, ref x, true), signed: false);
    private static void ImulR(Vcpu c, ref Insn x) => WideMul(c, x.SizeLog, c.GetReg(x.R0, x.SizeLog), signed: true);
    private static void ImulM(Vcpu c, ref Insn x) => WideMul(c, x.SizeLog, Src(c, ref x, true), signed: true);
    private static void DivR(Vcpu c, ref Insn x) => Divide(c, x.SizeLog, c.GetReg(x.R0, x.SizeLog), signed: false);
    private static void DivM(Vcpu c, ref Insn x) => Divide(c, x.SizeLog, Src(c, ref x, true), signed: false);
    private static void IdivR(Vcpu c, ref Insn x) => Divide(c, x.SizeLog, c.GetReg(x.R0, x.SizeLog), signed: true);
    private static void IdivM(Vcpu c, ref Insn x) => Divide(c, x.SizeLog, Src(c, ref x, true), signed: true);

    private static long Sx(ulong v, int log) { int sh = 64 - (8 << log); return (long)(v << sh) >> sh; }

    private static void SetMulFlags(Vcpu c, int log, ulong low, bool overflow)
    {
        ulong f = (Vcpu.ZspOf(low, log) & ~Rflags.AF) | (overflow ? Rflags.CF | Rflags.OF : 0);
        c.SetArith(Rflags.Arith, f);
    }

    /// <summary>One-operand mul/imul: rDX:rAX (AX for bytes) = rAX * src.</summary>
    private static void WideMul(Vcpu c, int log, ulong src, bool signed)
    {
        var s = c.S;
        int bits = 8 << log;
        ulong mask = Vcpu.SizeMask(log);
        ulong a = c.GetReg(Reg.Rax, log);
        ulong lo, hi;
        bool overflow;
        if (log == 3)
        {
            if (signed)
            {
                Int128 p = (Int128)(long)a * (long)src;
                lo = (ulong)p; hi = (ulong)(p >> 64);
                overflow = p != (long)lo;
            }
            else
            {
                hi = Math.BigMul(a, src, out lo);
                overflow = hi != 0;
            }
        }
        else
        {
            ulong p = signed ? (ulong)(Sx(a, log) * Sx(src, log)) : a * src;
            lo = p & mask;
            hi = (p >> bits) & mask;
            overflow = signed ? (long)p != Sx(lo, log) : hi != 0;
        }
        if (log == 0) c.SetReg(Reg.Rax, 1, (hi << 8) | lo);
        else { c.SetReg(Reg.Rax, log, lo); c.SetReg(Reg.Rdx, log, hi); }
        SetMulFlags(c, log, lo, overflow);
    }

    internal static ulong TruncMul(Vcpu c, int log, ulong a, ulong b)
    {
        ulong lo;
        bool overflow;
        if (log == 3)
        {
            Int128 p = (Int128)(long)a * (long)b;
            lo = (ulong)p;
            overflow = p != (long)lo;
        }
        else
        {
            long p = Sx(a, log) * Sx(b, log);
            lo = (ulong)p & Vcpu.SizeMask(log);
            overflow = p != Sx(lo, log);
        }
        SetMulFlags(c, log, lo, overflow);
        return lo;
    }

    private static void Imul2R(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, TruncMul(c, x.SizeLog, c.GetReg(x.R0, x.SizeLog), c.GetReg(x.R1, x.SizeLog)));
    private static void Imul2M(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, TruncMul(c, x.SizeLog, c.GetReg(x.R0, x.SizeLog), c.Load(c.Ea(ref x), x.SizeLog)));
    private static void Imul3R(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, TruncMul(c, x.SizeLog, c.GetReg(x.R1, x.SizeLog), x.Imm));
    private static void Imul3M(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, TruncMul(c, x.SizeLog, c.Load(c.Ea(ref x), x.SizeLog), x.Imm));

    /// <summary>div/idiv: #DE on a zero divisor or a quotient that does not fit.</summary>
    private static void Divide(Vcpu c, int log, ulong divisor, bool signed)
    {
        ulong mask = Vcpu.SizeMask(log);
        divisor &= mask;
        if (divisor == 0) throw new GuestFault(Vectors.DE);
        int bits = 8 << log;
        UInt128 dividendU = log == 0 ? c.GetReg(Reg.Rax, 1)
            : ((UInt128)c.GetReg(Reg.Rdx, log) << bits) | c.GetReg(Reg.Rax, log);
        ulong q, r;
        if (!signed)
        {
            UInt128 qq = dividendU / divisor;
            if (qq > mask) throw new GuestFault(Vectors.DE);
            q = (ulong)qq;
            r = (ulong)(dividendU % divisor);
        }
        else
        {
            // Sign-extend the 2*bits-wide dividend.
            Int128 dividend = (Int128)(dividendU << (128 - 2 * bits)) >> (128 - 2 * bits);
            Int128 d = Sx(divisor, log);
            // -2^127 / -1 overflows Int128 itself (the host would throw): its quotient never fits anyway.
            if (dividend == Int128.MinValue && d == -1) throw new GuestFault(Vectors.DE);
            Int128 qq = dividend / d;
            Int128 min = -((Int128)1 << (bits - 1)), max = ((Int128)1 << (bits - 1)) - 1;
            if (qq < min || qq > max) throw new GuestFault(Vectors.DE);
            q = (ulong)qq & mask;
            r = (ulong)(dividend % d) & mask;
        }
        if (log == 0) c.SetReg(Reg.Rax, 1, (r << 8) | q);
        else { c.SetReg(Reg.Rax, log, q); c.SetReg(Reg.Rdx, log, r); }
    }
}
