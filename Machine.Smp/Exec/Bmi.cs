using System.Buffers.Binary;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>
/// The integer extensions gcc emits for x86-64-v3 (-march=haswell and later): BMI1 (andn bextr
/// blsi blsmsk blsr; tzcnt is in Bits), BMI2 (bzhi mulx pdep pext rorx sarx shlx shrx), MOVBE and
/// ADX (adcx adox). The VEX forms have up to three GPR operands; after decoding, R0 is the
/// destination, R1 the VEX.vvvv source (when there is one) and R2 the r/m source when it is a
/// register (a memory r/m goes through the memory recipe). Flags the SDM leaves undefined (AF and
/// PF, and SF for bextr) are left unchanged: the fixed choice, as tzcnt's in Bits.
/// </summary>
internal static unsafe class Bmi
{
    private const byte Andn = 0, Bextr = 1, Blsi = 2, Blsmsk = 3, Blsr = 4, Bzhi = 5, Pdep = 6, Pext = 7,
        Sarx = 8, Shlx = 9, Shrx = 10, Rorx = 11, Mulx = 12;

    /// <summary>Where each VEX mnemonic keeps its sources in Iced's operand order: vvvv second (r, vvvv, r/m) or last (r, r/m, vvvv).</summary>
    private enum Shape : byte { VvvvSecond, VvvvLast, VvvvDest, NoVvvv }

    private static readonly (Mnemonic Mnemonic, byte Op, Shape Shape)[] vexRows =
    [
        (Mnemonic.Andn, Andn, Shape.VvvvSecond), (Mnemonic.Pdep, Pdep, Shape.VvvvSecond), (Mnemonic.Pext, Pext, Shape.VvvvSecond),
        (Mnemonic.Mulx, Mulx, Shape.VvvvSecond),
        (Mnemonic.Bextr, Bextr, Shape.VvvvLast), (Mnemonic.Bzhi, Bzhi, Shape.VvvvLast), (Mnemonic.Sarx, Sarx, Shape.VvvvLast),
        (Mnemonic.Shlx, Shlx, Shape.VvvvLast), (Mnemonic.Shrx, Shrx, Shape.VvvvLast),
        (Mnemonic.Blsi, Blsi, Shape.VvvvDest), (Mnemonic.Blsmsk, Blsmsk, Shape.VvvvDest), (Mnemonic.Blsr, Blsr, Shape.VvvvDest),
        (Mnemonic.Rorx, Rorx, Shape.NoVvvv),
    ];

    private static readonly Shape[] shapes = new Shape[Mulx + 1];

    public static void Install()
    {
        foreach (var (m, op, shape) in vexRows)
        {
            OpTable.Add(m, &BuildVex, op);
            shapes[op] = shape;
        }
        OpTable.Add(Mnemonic.Movbe, &BuildMovbe);
        OpTable.Add(Mnemonic.Adcx, &BuildAdx, 0);
        OpTable.Add(Mnemonic.Adox, &BuildAdx, 1);
    }

    private static bool BuildVex(ref Insn x, in Instruction ins)
    {
        if (x.SizeLog < 2) return false;
        bool mem = x.Has(InsnFlags.MemOperand);
        // Operands() collected the GPRs in operand order, skipping a memory operand: normalize.
        switch (shapes[x.Sub])
        {
            case Shape.VvvvSecond: // r, vvvv, r/m: R0 R1 [R2]
                break;
            case Shape.VvvvLast: // r, r/m, vvvv: registers R0 (R1=r/m) R2=vvvv, or R0 R1=vvvv with memory
                if (!mem) (x.R1, x.R2) = (x.R2, x.R1);
                break;
            case Shape.VvvvDest: // vvvv, r/m
            case Shape.NoVvvv: // r, r/m, imm8
                if (!mem) x.R2 = x.R1;
                x.R1 = Reg.None;
                break;
        }
        x.Exec = &Vex;
        return true;
    }

    private static ulong RmSource(Vcpu c, ref Insn x) => x.Has(InsnFlags.MemOperand) ? c.Load(c.Ea(ref x), x.SizeLog) : c.GetReg(x.R2, x.SizeLog);

    private static void Vex(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog, bits = 8 << log;
        ulong mask = Vcpu.SizeMask(log);
        ulong rm = RmSource(c, ref x);
        ulong v = x.R1 != Reg.None ? c.GetReg(x.R1, log) : 0;
        const ulong Cf = Rflags.CF, Of = Rflags.OF, Zf = Rflags.ZF, Sf = Rflags.SF;
        ulong r;
        switch (x.Sub)
        {
            case Andn:
                r = ~v & rm & mask;
                c.SetArith(Cf | Of | Zf | Sf, Zs(r, log));
                break;
            case Bextr:
            {
                int start = (int)(v & 0xFF), len = (int)((v >> 8) & 0xFF);
                r = start >= bits ? 0 : rm >> start;
                if (len < 64) r &= (1UL << len) - 1;
                r &= mask;
                c.SetArith(Cf | Of | Zf, r == 0 ? Zf : 0);
                break;
            }
            case Blsi:
                r = rm & (0 - rm) & mask;
                c.SetArith(Cf | Of | Zf | Sf, Zs(r, log) | (rm != 0 ? Cf : 0));
                break;
            case Blsmsk:
                r = (rm ^ (rm - 1)) & mask;
                c.SetArith(Cf | Of | Zf | Sf, Zs(r, log) | (rm == 0 ? Cf : 0));
                break;
            case Blsr:
                r = rm & (rm - 1) & mask;
                c.SetArith(Cf | Of | Zf | Sf, Zs(r, log) | (rm == 0 ? Cf : 0));
                break;
            case Bzhi:
            {
                int n = (int)(v & 0xFF);
                r = n < bits ? rm & ((1UL << n) - 1) : rm;
                c.SetArith(Cf | Of | Zf | Sf, Zs(r, log) | (n > bits - 1 ? Cf : 0));
                break;
            }
            case Pdep:
                r = Deposit(v, rm & mask) & mask;
                break;
            case Pext:
                r = Extract(v, rm & mask);
                break;
            case Sarx:
                r = (ulong)((long)(rm << (64 - bits)) >> (int)(v & (ulong)(bits - 1)) >> (64 - bits)) & mask;
                break;
            case Shlx:
                r = (rm << (int)(v & (ulong)(bits - 1))) & mask;
                break;
            case Shrx:
                r = rm >> (int)(v & (ulong)(bits - 1));
                break;
            case Rorx:
            {
                int n = (int)(x.Imm & (ulong)(bits - 1));
                r = n == 0 ? rm : ((rm >> n) | (rm << (bits - n))) & mask;
                break;
            }
            default: // mulx: hi:lo = rdx * r/m, unsigned; hi (R0) is written last, so it wins when R0 == R1
            {
                ulong d = c.GetReg(Reg.Rdx, log);
                ulong hi, lo;
                if (log == 3) hi = Math.BigMul(d, rm, out lo);
                else { ulong p = d * rm; lo = (uint)p; hi = p >> 32; }
                c.SetReg(x.R1, log, lo);
                c.SetReg(x.R0, log, hi);
                return;
            }
        }
        c.SetReg(x.R0, log, r);
    }

    /// <summary>ZF and SF of a result (the logic-like BMI flags; AF and PF are left as they were).</summary>
    private static ulong Zs(ulong r, int log) => Vcpu.ZspOf(r, log) & (Rflags.ZF | Rflags.SF);

    private static ulong Deposit(ulong source, ulong selector)
    {
        ulong r = 0;
        for (ulong bit = 1; selector != 0; bit <<= 1)
        {
            ulong lowest = selector & (0 - selector);
            if ((source & bit) != 0) r |= lowest;
            selector &= selector - 1;
        }
        return r;
    }

    private static ulong Extract(ulong source, ulong selector)
    {
        ulong r = 0;
        for (ulong bit = 1; selector != 0; bit <<= 1)
        {
            ulong lowest = selector & (0 - selector);
            if ((source & lowest) != 0) r |= bit;
            selector &= selector - 1;
        }
        return r;
    }

    // ---- movbe: a load or store with the bytes reversed (16, 32, 64 bits; no flags) ----------------

    private static bool BuildMovbe(ref Insn x, in Instruction ins)
    {
        if (!x.Has(InsnFlags.MemOperand) || x.SizeLog == 0) return false;
        x.Exec = ins.Op0Kind == OpKind.Memory ? &MovbeStore : &MovbeLoad;
        return true;
    }

    private static ulong Swap(ulong v, int log) => log switch
    {
        1 => BinaryPrimitives.ReverseEndianness((ushort)v),
        2 => BinaryPrimitives.ReverseEndianness((uint)v),
        _ => BinaryPrimitives.ReverseEndianness(v),
    };

    private static void MovbeLoad(Vcpu c, ref Insn x) => c.SetReg(x.R0, x.SizeLog, Swap(c.Load(c.Ea(ref x), x.SizeLog), x.SizeLog));

    private static void MovbeStore(Vcpu c, ref Insn x) => c.Store(c.Ea(ref x), x.SizeLog, Swap(c.GetReg(x.R0, x.SizeLog), x.SizeLog));

    // ---- adcx / adox: add with carry through CF or OF only (the other flags untouched) -------------

    private static bool BuildAdx(ref Insn x, in Instruction ins)
    {
        if (x.SizeLog < 2) return false;
        x.Exec = &Adx;
        return true;
    }

    private static void Adx(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong flag = x.Sub == 0 ? Rflags.CF : Rflags.OF;
        ulong carryIn = (x.Sub == 0 ? c.CF : c.OF) ? 1UL : 0;
        ulong a = c.GetReg(x.R0, log);
        ulong b = x.Has(InsnFlags.MemOperand) ? c.Load(c.Ea(ref x), log) : c.GetReg(x.R1, log);
        ulong r;
        bool carryOut;
        if (log == 3)
        {
            r = a + b + carryIn;
            carryOut = r < a || (r == a && carryIn != 0);
        }
        else
        {
            ulong wide = (uint)a + (ulong)(uint)b + carryIn;
            r = (uint)wide;
            carryOut = wide >> 32 != 0;
        }
        c.SetArith(flag, carryOut ? flag : 0);
        c.SetReg(x.R0, log, r);
    }
}
