using System.Numerics;
using System.Runtime.CompilerServices;
using Harness.Smp.Cpu;

namespace Harness.Smp;

/// <summary>The operation whose result the lazy flags describe.</summary>
public enum FlagOp
{
    None = 0,   // arithmetic flags are materialized in RflagsRaw
    Add, Adc, Sub, Sbb,
    Logic,      // CF=OF=0, AF=0 (our fixed choice for the undefined AF)
    Inc, Dec,   // like Add/Sub with src2 = 1, CF preserved in LazyCfIn
    Shl, Shr, Sar, // src1 = the operand, src2 = the masked count (non-zero); AF = 0
}

// Lazy flags: arithmetic instructions record (op, size, operands, result) and flags are computed
// only when read. Most results are never inspected, or only by the next jcc, so this removes the
// flag work from the common path (the technique Bochs and QEMU use).
public unsafe partial class Vcpu
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong SizeMask(int log) => ulong.MaxValue >> (64 - (8 << log));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong SignBit(int log) => 1UL << ((8 << log) - 1);

    /// <summary>
    /// Records the operation the arithmetic flags now describe (the one writer of the lazy record);
    /// returns the result so an operation can be written as one expression.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong SetLazy(FlagOp op, int sizeLog, ulong res, ulong s1, ulong s2)
    {
        var s = S;
        s->LazyOp = (int)op;
        s->LazySize = sizeLog;
        s->LazyRes = res;
        s->LazySrc1 = s1;
        s->LazySrc2 = s2;
        return res;
    }

    /// <summary>The same for the operations whose flags depend on the carry they read (adc, sbb, inc, dec).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong SetLazy(FlagOp op, int sizeLog, ulong res, ulong s1, ulong s2, ulong carryIn)
    {
        SetLazy(op, sizeLog, res, s1, s2);
        S->LazyCfIn = carryIn;
        return res;
    }

    /// <summary>The whole flag state (lazy record and raw flags), for an operation that may have to undo its flag update.</summary>
    internal readonly record struct FlagState(int Op, int Size, ulong Res, ulong Src1, ulong Src2, ulong CfIn, ulong Raw);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal FlagState SaveFlags()
    {
        var s = S;
        return new FlagState(s->LazyOp, s->LazySize, s->LazyRes, s->LazySrc1, s->LazySrc2, s->LazyCfIn, s->RflagsRaw);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void RestoreFlags(in FlagState f)
    {
        var s = S;
        s->LazyOp = f.Op; s->LazySize = f.Size; s->LazyRes = f.Res; s->LazySrc1 = f.Src1; s->LazySrc2 = f.Src2; s->LazyCfIn = f.CfIn; s->RflagsRaw = f.Raw;
    }

    internal bool CF
    {
        get
        {
            var s = S;
            ulong m = SizeMask(s->LazySize);
            return (FlagOp)s->LazyOp switch
            {
                FlagOp.None => (s->RflagsRaw & Cpu.Rflags.CF) != 0,
                FlagOp.Add => (s->LazyRes & m) < (s->LazySrc1 & m),
                FlagOp.Adc => s->LazyCfIn != 0 ? (s->LazyRes & m) <= (s->LazySrc1 & m) : (s->LazyRes & m) < (s->LazySrc1 & m),
                FlagOp.Sub => (s->LazySrc1 & m) < (s->LazySrc2 & m),
                FlagOp.Sbb => s->LazyCfIn != 0 ? (s->LazySrc1 & m) <= (s->LazySrc2 & m) : (s->LazySrc1 & m) < (s->LazySrc2 & m),
                FlagOp.Logic => false,
                FlagOp.Shl => ShiftCf(s, m),
                FlagOp.Shr => ShiftCf(s, m),
                FlagOp.Sar => ShiftCf(s, m),
                _ => s->LazyCfIn != 0, // Inc, Dec
            };
        }
    }

    internal bool ZF
    {
        get
        {
            var s = S;
            return s->LazyOp == 0 ? (s->RflagsRaw & Cpu.Rflags.ZF) != 0 : (s->LazyRes & SizeMask(s->LazySize)) == 0;
        }
    }

    internal bool SF
    {
        get
        {
            var s = S;
            return s->LazyOp == 0 ? (s->RflagsRaw & Cpu.Rflags.SF) != 0 : (s->LazyRes & SignBit(s->LazySize)) != 0;
        }
    }

    internal bool PF
    {
        get
        {
            var s = S;
            return s->LazyOp == 0 ? (s->RflagsRaw & Cpu.Rflags.PF) != 0 : (BitOperations.PopCount(s->LazyRes & 0xFF) & 1) == 0;
        }
    }

    internal bool OF
    {
        get
        {
            var s = S;
            ulong sign = SignBit(s->LazySize);
            ulong r = s->LazyRes, a = s->LazySrc1, b = s->LazySrc2;
            return (FlagOp)s->LazyOp switch
            {
                FlagOp.None => (s->RflagsRaw & Cpu.Rflags.OF) != 0,
                FlagOp.Add or FlagOp.Adc or FlagOp.Inc => ((a ^ r) & (b ^ r) & sign) != 0,
                FlagOp.Sub or FlagOp.Sbb or FlagOp.Dec => ((a ^ b) & (a ^ r) & sign) != 0,
                // shl: MSB(result) xor CF (the count-1 formula, kept for every count); shr: the
                // operand's MSB for a count of 1, else 0; sar: 0 (docs/isa.md).
                FlagOp.Shl => ((r & sign) != 0) ^ CF,
                FlagOp.Shr => b == 1 && (a & sign) != 0,
                _ => false,
            };
        }
    }

    internal bool AF
    {
        get
        {
            var s = S;
            return (FlagOp)s->LazyOp switch
            {
                FlagOp.None => (s->RflagsRaw & Cpu.Rflags.AF) != 0,
                FlagOp.Logic or FlagOp.Shl or FlagOp.Shr or FlagOp.Sar => false,
                _ => ((s->LazySrc1 ^ s->LazySrc2 ^ s->LazyRes) & 0x10) != 0,
            };
        }
    }

    /// <summary>The last bit a shift moved out (operand already masked; count 1..63).</summary>
    private static bool ShiftCf(CpuState* s, ulong mask)
    {
        int bits = 8 << s->LazySize, n = (int)s->LazySrc2;
        ulong a = s->LazySrc1 & mask;
        switch ((FlagOp)s->LazyOp)
        {
            case FlagOp.Shl: return n <= bits && ((a >> (bits - n)) & 1) != 0;
            case FlagOp.Shr: return n <= bits && ((a >> (n - 1)) & 1) != 0;
            default:
            {
                int sh = 64 - bits;
                long sa = (long)(a << sh) >> sh;
                return n >= bits ? sa < 0 : ((sa >> (n - 1)) & 1) != 0;
            }
        }
    }

    /// <summary>Computes the arithmetic flags into RflagsRaw and drops the lazy record.</summary>
    public void MaterializeFlags()
    {
        var s = S;
        if (s->LazyOp == 0) return;
        ulong f = s->RflagsRaw & ~Cpu.Rflags.Arith;
        if (CF) f |= Cpu.Rflags.CF;
        if (PF) f |= Cpu.Rflags.PF;
        if (AF) f |= Cpu.Rflags.AF;
        if (ZF) f |= Cpu.Rflags.ZF;
        if (SF) f |= Cpu.Rflags.SF;
        if (OF) f |= Cpu.Rflags.OF;
        s->RflagsRaw = f;
        s->LazyOp = 0;
    }

    public ulong Rflags
    {
        get { MaterializeFlags(); return S->RflagsRaw; }
        set { S->LazyOp = 0; S->RflagsRaw = value | Cpu.Rflags.Fixed1; }
    }

    /// <summary>Sets the given arithmetic flags explicitly (eager instructions: shifts, mul, bit ops).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetArith(ulong mask, ulong values)
    {
        if (mask == Cpu.Rflags.Arith) S->LazyOp = 0; // every arithmetic flag is replaced: nothing to compute
        else MaterializeFlags();
        S->RflagsRaw = (S->RflagsRaw & ~mask) | (values & mask);
    }

    /// <summary>ZF, SF and PF from a result, as every logic-like eager instruction computes them.</summary>
    internal static ulong ZspOf(ulong res, int sizeLog)
    {
        ulong f = 0;
        if ((res & SizeMask(sizeLog)) == 0) f |= Cpu.Rflags.ZF;
        if ((res & SignBit(sizeLog)) != 0) f |= Cpu.Rflags.SF;
        if ((BitOperations.PopCount(res & 0xFF) & 1) == 0) f |= Cpu.Rflags.PF;
        return f;
    }

    /// <summary>Evaluates condition code cc (the low nibble of the jcc/setcc/cmovcc opcode).</summary>
    internal bool Cond(int cc)
    {
        var s = S;
        if (s->LazyOp == (int)FlagOp.Sub)
        {
            // cmp/sub fast path: compare the operands directly.
            int log = s->LazySize;
            ulong m = SizeMask(log);
            ulong a = s->LazySrc1 & m, b = s->LazySrc2 & m;
            int sh = 64 - (8 << log);
            long sa = (long)(a << sh) >> sh, sb = (long)(b << sh) >> sh;
            switch (cc)
            {
                case 2: return a < b;
                case 3: return a >= b;
                case 4: return a == b;
                case 5: return a != b;
                case 6: return a <= b;
                case 7: return a > b;
                case 12: return sa < sb;
                case 13: return sa >= sb;
                case 14: return sa <= sb;
                case 15: return sa > sb;
            }
        }
        bool r = (cc >> 1) switch
        {
            0 => OF,
            1 => CF,
            2 => ZF,
            3 => CF || ZF,
            4 => SF,
            5 => PF,
            6 => SF != OF,
            _ => ZF || SF != OF,
        };
        return r ^ ((cc & 1) != 0);
    }
}
