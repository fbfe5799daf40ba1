using System.Numerics;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>
/// bt bts btr btc (register and bit-string memory forms, lockable), bsf bsr tzcnt lzcnt popcnt.
/// Undefined flags (fixed choice): bt* change only CF; bsf/bsr change only ZF; tzcnt/lzcnt only CF
/// and ZF; a zero source leaves the bsf/bsr destination unchanged (as Intel and AMD hardware do).
/// </summary>
internal static unsafe class Bits
{
    public const byte Bt = 0, Bts = 1, Btr = 2, Btc = 3;
    public const byte Bsf = 0, Bsr = 1, Tzcnt = 2, Lzcnt = 3, Popcnt = 4;

    public static void Install()
    {
        // bt only reads: no lock-prefixed form.
        var test = new FormMap().On(Form.RR, &BtRR).On(Form.RI, &BtRI).On(Form.MR, &BtMem).On(Form.MI, &BtMem);
        var change = new FormMap().On(Form.RR, &BtRR).On(Form.RI, &BtRI).On(Form.MR, &BtMem).On(Form.MI, &BtMem)
            .Locked(Form.MR, &LockedBtM).Locked(Form.MI, &LockedBtM);
        OpTable.Add(Mnemonic.Bt, test, Bt);
        OpTable.Add(Mnemonic.Bts, change, Bts);
        OpTable.Add(Mnemonic.Btr, change, Btr);
        OpTable.Add(Mnemonic.Btc, change, Btc);
        var scan = new FormMap().On(Form.RR, &ScanR).On(Form.RM, &ScanM);
        OpTable.Add(Mnemonic.Bsf, scan, Bsf);
        OpTable.Add(Mnemonic.Bsr, scan, Bsr);
        OpTable.Add(Mnemonic.Tzcnt, scan, Tzcnt);
        OpTable.Add(Mnemonic.Lzcnt, scan, Lzcnt);
        OpTable.Add(Mnemonic.Popcnt, scan, Popcnt);
    }

    private static ulong Apply(int op, ulong v, ulong bit) => op switch
    {
        Bts => v | bit,
        Btr => v & ~bit,
        Btc => v ^ bit,
        _ => v,
    };

    private static void SetCf(Vcpu c, bool cf) => c.SetArith(Rflags.CF, cf ? Rflags.CF : 0);

    private static void BtRR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong bit = 1UL << (int)(c.GetReg(x.R1, log) & (ulong)((8 << log) - 1));
        ulong v = c.GetReg(x.R0, log);
        SetCf(c, (v & bit) != 0);
        if (x.Sub != Bt) c.SetReg(x.R0, log, Apply(x.Sub, v, bit));
    }

    private static void BtRI(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong bit = 1UL << (int)(x.Imm & (ulong)((8 << log) - 1));
        ulong v = c.GetReg(x.R0, log);
        SetCf(c, (v & bit) != 0);
        if (x.Sub != Bt) c.SetReg(x.R0, log, Apply(x.Sub, v, bit));
    }

    /// <summary>Bit-string addressing: a register offset is signed and may select any operand-sized word around ea.</summary>
    private static ulong Element(Vcpu c, ref Insn x, out ulong bit)
    {
        int log = x.SizeLog, bits = 8 << log;
        ulong ea = c.Ea(ref x);
        if (x.R0 != Reg.None)
        {
            long off = log switch { 1 => (short)c.GetReg(x.R0, 1), 2 => (int)c.GetReg(x.R0, 2), _ => (long)c.GetReg(x.R0, 3) };
            ea += (ulong)((off >> (3 + log)) << log);
            bit = 1UL << (int)(off & (bits - 1));
        }
        else bit = 1UL << (int)(x.Imm & (ulong)(bits - 1));
        return ea;
    }

    private static void BtMem(Vcpu c, ref Insn x)
    {
        ulong ea = Element(c, ref x, out ulong bit);
        ulong v = c.Load(ea, x.SizeLog);
        SetCf(c, (v & bit) != 0);
        if (x.Sub != Bt) c.Store(ea, x.SizeLog, Apply(x.Sub, v, bit));
    }

    private static ulong LockedNew(Vcpu c, ref Insn x, ulong old, ulong bit) => Apply(x.Sub, old, bit);

    private static void LockedBtM(Vcpu c, ref Insn x)
    {
        ulong ea = Element(c, ref x, out ulong bit);
        ulong old = Atomics.Rmw(c, ref x, ea, &LockedNew, bit);
        SetCf(c, (old & bit) != 0);
    }

    private static void ScanR(Vcpu c, ref Insn x) => Scan(c, ref x, c.GetReg(x.R1, x.SizeLog));
    private static void ScanM(Vcpu c, ref Insn x) => Scan(c, ref x, c.Load(c.Ea(ref x), x.SizeLog));

    private static void Scan(Vcpu c, ref Insn x, ulong src)
    {
        int log = x.SizeLog, bits = 8 << log;
        src &= Vcpu.SizeMask(log);
        switch (x.Sub)
        {
            case Bsf:
            case Bsr:
                if (src == 0) { c.SetArith(Rflags.ZF, Rflags.ZF); return; }
                c.SetArith(Rflags.ZF, 0);
                c.SetReg(x.R0, log, x.Sub == Bsf ? (ulong)BitOperations.TrailingZeroCount(src) : (ulong)(63 - BitOperations.LeadingZeroCount(src)));
                return;
            case Tzcnt:
            case Lzcnt:
            {
                ulong r = src == 0 ? (ulong)bits
                    : x.Sub == Tzcnt ? (ulong)BitOperations.TrailingZeroCount(src)
                    : (ulong)(BitOperations.LeadingZeroCount(src) - (64 - bits));
                c.SetArith(Rflags.CF | Rflags.ZF, (src == 0 ? Rflags.CF : 0) | (r == 0 ? Rflags.ZF : 0));
                c.SetReg(x.R0, log, r);
                return;
            }
            default:
                c.SetArith(Rflags.Arith, src == 0 ? Rflags.ZF : 0);
                c.SetReg(x.R0, log, (ulong)BitOperations.PopCount(src));
                return;
        }
    }
}
