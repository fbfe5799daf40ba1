// Which RFLAGS bits (and, rarely, which register bits) an instruction leaves architecturally
// UNDEFINED, per the Intel SDM / AMD APM. The differential check masks exactly these, and only
// when the instruction is the last writer of the flag; everything else must match bit for bit.
//
// Some entries depend on operand values (shift counts, a zero bsf source, a faulting divide),
// so they are evaluated against the real (native) machine state just before the instruction.

using Iced.Intel;
using Harness.Smp.Tests.Native;


namespace Harness.Smp.Tests.Differential;

/// <summary>The architectural effect of one instruction on definedness.</summary>
public sealed class Effect
{
    /// <summary>Arithmetic flags the instruction writes with a defined value.</summary>
    public ulong Defined;
    /// <summary>Arithmetic flags the instruction leaves undefined.</summary>
    public ulong Undefined;
    /// <summary>Register bits (by GPR number) whose value is undefined afterwards.</summary>
    public List<(int Gpr, ulong Bits)> UndefinedRegs = [];
    /// <summary>The instruction writes an undefined value to memory: comparison must stop before it.</summary>
    public bool UndefinedMemory;
    /// <summary>The instruction raises #DE with this input.</summary>
    public bool DivideError;
}

public static class UndefinedFlags
{
    public const ulong CF = NativeState.CF, PF = NativeState.PF, AF = NativeState.AF, ZF = NativeState.ZF,
        SF = NativeState.SF, OF = NativeState.OF, DF = NativeState.DF;
    public const ulong All6 = CF | PF | AF | ZF | SF | OF;

    /// <summary>Value-independent rows: mnemonic -> (defined, undefined).</summary>
    static readonly Dictionary<Mnemonic, (ulong Defined, ulong Undefined)> Static = new()
    {
        // add/adc/sub/sbb/cmp/neg: all six defined.
        [Mnemonic.Add] = (All6, 0), [Mnemonic.Adc] = (All6, 0), [Mnemonic.Sub] = (All6, 0),
        [Mnemonic.Sbb] = (All6, 0), [Mnemonic.Cmp] = (All6, 0), [Mnemonic.Neg] = (All6, 0),
        // inc/dec: CF is not touched.
        [Mnemonic.Inc] = (All6 & ~CF, 0), [Mnemonic.Dec] = (All6 & ~CF, 0),
        // Logic: CF = OF = 0, SF ZF PF from the result, AF undefined.
        [Mnemonic.And] = (All6 & ~AF, AF), [Mnemonic.Or] = (All6 & ~AF, AF),
        [Mnemonic.Xor] = (All6 & ~AF, AF), [Mnemonic.Test] = (All6 & ~AF, AF),
        // mul/imul (all forms): CF = OF = "high half significant"; SF ZF AF PF undefined.
        [Mnemonic.Mul] = (CF | OF, SF | ZF | AF | PF), [Mnemonic.Imul] = (CF | OF, SF | ZF | AF | PF),
        // div/idiv: all six undefined (when they do not fault).
        [Mnemonic.Div] = (0, All6), [Mnemonic.Idiv] = (0, All6),
        // bt*: CF = the selected bit; ZF unchanged; OF SF AF PF undefined.
        [Mnemonic.Bt] = (CF, OF | SF | AF | PF), [Mnemonic.Bts] = (CF, OF | SF | AF | PF),
        [Mnemonic.Btr] = (CF, OF | SF | AF | PF), [Mnemonic.Btc] = (CF, OF | SF | AF | PF),
        // bsf/bsr: ZF = (source == 0); CF OF SF AF PF undefined (destination: see Evaluate).
        [Mnemonic.Bsf] = (ZF, CF | OF | SF | AF | PF), [Mnemonic.Bsr] = (ZF, CF | OF | SF | AF | PF),
        // tzcnt/lzcnt: CF = (source == 0), ZF = (result == 0); OF SF AF PF undefined.
        [Mnemonic.Tzcnt] = (CF | ZF, OF | SF | AF | PF), [Mnemonic.Lzcnt] = (CF | ZF, OF | SF | AF | PF),
        // popcnt: ZF = (source == 0), the other five cleared.
        [Mnemonic.Popcnt] = (All6, 0),
        // xadd: as add; cmpxchg: as cmp of the accumulator with the destination.
        [Mnemonic.Xadd] = (All6, 0), [Mnemonic.Cmpxchg] = (All6, 0),
        // BMI1/BMI2: the logic-like ones clear OF (and CF unless it reports something), set ZF (and SF),
        // leave AF and PF undefined; bextr also SF. The others write no flags.
        [Mnemonic.Andn] = (CF | OF | ZF | SF, AF | PF), [Mnemonic.Bextr] = (CF | OF | ZF, AF | SF | PF),
        [Mnemonic.Blsi] = (CF | OF | ZF | SF, AF | PF), [Mnemonic.Blsmsk] = (CF | OF | ZF | SF, AF | PF),
        [Mnemonic.Blsr] = (CF | OF | ZF | SF, AF | PF), [Mnemonic.Bzhi] = (CF | OF | ZF | SF, AF | PF),
        // adcx/adox: the carry through CF or OF only.
        [Mnemonic.Adcx] = (CF, 0), [Mnemonic.Adox] = (OF, 0),
        // Flag instructions.
        [Mnemonic.Stc] = (CF, 0), [Mnemonic.Clc] = (CF, 0), [Mnemonic.Cmc] = (CF, 0),
    };

    /// <summary>Evaluates the row for ins against the real state just before it.</summary>
    public static Effect Evaluate(in Instruction ins, NativeState pre, byte[] preScratch)
    {
        var e = new Effect();
        var m = ins.Mnemonic;
        if (Static.TryGetValue(m, out var row)) { e.Defined = row.Defined; e.Undefined = row.Undefined; }
        switch (m)
        {
            case Mnemonic.Shl: case Mnemonic.Sal: case Mnemonic.Shr: case Mnemonic.Sar:
            {
                int bits = OperandBits(ins);
                int n = Count(ins, 1, pre, bits);
                if (n == 0) break;                        // count 0: flags unchanged
                e.Defined = CF | ZF | SF | PF | OF;
                e.Undefined = AF;                         // AF undefined for any non-zero count
                if (n != 1) { e.Defined &= ~OF; e.Undefined |= OF; }      // OF only defined for count 1
                // SDM: CF is undefined for SHL/SHR when the count is >= the operand width (8/16-bit only).
                if (n >= bits && m != Mnemonic.Sar) { e.Defined &= ~CF; e.Undefined |= CF; }
                break;
            }
            case Mnemonic.Rol: case Mnemonic.Ror: case Mnemonic.Rcl: case Mnemonic.Rcr:
            {
                int bits = OperandBits(ins);
                int n = Count(ins, 1, pre, bits);
                if (n == 0) break;                        // masked count 0: flags unchanged
                e.Defined = CF | OF;                      // rotates touch only CF and OF
                if (n != 1) { e.Defined = CF; e.Undefined = OF; }  // OF only defined for count 1
                // rcl/rcr of 8 or 16 bits rotate by the count mod 9 or 17: by 0 (a count of 9, 18,
                // 27 or 17) nothing moves and CF keeps its value, defined or not (found by the Shifts
                // property: an undefined CF from shld si,r13w,cl with cl=26 passed through rcr bl,27).
                if (m is Mnemonic.Rcl or Mnemonic.Rcr && bits < 32 && n % (bits + 1) == 0) e.Defined &= ~CF;
                break;
            }
            case Mnemonic.Shld: case Mnemonic.Shrd:
            {
                int bits = OperandBits(ins);
                int n = Count(ins, 2, pre, bits);
                if (n == 0) break;
                e.Defined = CF | ZF | SF | PF | OF;
                e.Undefined = AF;
                if (n != 1) { e.Defined &= ~OF; e.Undefined |= OF; }
                if (n > bits)
                {
                    // 16-bit with count 17..31: result and all flags undefined.
                    e.Defined = 0; e.Undefined = All6;
                    if (ins.Op0Kind == OpKind.Register) e.UndefinedRegs.Add((GprNumber(ins.Op0Register), RegisterBits(ins.Op0Register)));
                    else e.UndefinedMemory = true;
                }
                break;
            }
            case Mnemonic.Bsf: case Mnemonic.Bsr:
                if (ReadOperand(ins, 1, pre, preScratch) == 0)
                {
                    // Zero source: destination undefined (AMD and Intel keep it, but Intel's 32-bit form
                    // clears the upper half), so the whole 64-bit register is masked.
                    var d = ins.Op0Register;
                    e.UndefinedRegs.Add((GprNumber(d), d.GetSize() == 2 ? 0xFFFFUL : ulong.MaxValue));
                }
                break;
            case Mnemonic.Bswap:
                // bswap r16 is undefined.
                if (ins.Op0Register.GetSize() == 2) e.UndefinedRegs.Add((GprNumber(ins.Op0Register), 0xFFFF));
                break;
            case Mnemonic.Div: case Mnemonic.Idiv:
                e.DivideError = DivideFaults(ins, pre, preScratch);
                break;
            case Mnemonic.Cmpsb: case Mnemonic.Cmpsw: case Mnemonic.Cmpsd: case Mnemonic.Cmpsq:
            case Mnemonic.Scasb: case Mnemonic.Scasw: case Mnemonic.Scasd: case Mnemonic.Scasq:
                // A rep-prefixed compare with rcx = 0 does nothing; otherwise the last compare defines all six.
                if (!(ins.HasRepePrefix || ins.HasRepnePrefix) || pre.Gpr[1] != 0) e.Defined = All6;
                break;
        }
        return e;
    }

    static int OperandBits(in Instruction ins) =>
        8 * (ins.Op0Kind == OpKind.Register ? ins.Op0Register.GetSize() : ins.MemorySize.GetSize());

    /// <summary>The shift count after masking (to 5 bits, 6 for 64-bit operands).</summary>
    static int Count(in Instruction ins, int op, NativeState pre, int bits)
    {
        ulong raw = ins.GetOpKind(op) == OpKind.Register ? (byte)pre.Gpr[1] : (byte)ins.GetImmediate(op);
        return (int)(raw & (bits == 64 ? 0x3FUL : 0x1FUL));
    }

    static bool DivideFaults(in Instruction ins, NativeState pre, byte[] scratch)
    {
        int size = ins.Op0Kind == OpKind.Register ? ins.Op0Register.GetSize() : ins.MemorySize.GetSize();
        int bits = size * 8;
        ulong mask = size == 8 ? ulong.MaxValue : (1UL << bits) - 1;
        ulong divisor = ReadOperand(ins, 0, pre, scratch) & mask;
        if (divisor == 0) return true;
        UInt128 dividend = size == 1 ? (ushort)pre.Gpr[0]
            : ((UInt128)(pre.Gpr[2] & mask) << bits) | (pre.Gpr[0] & mask);
        if (ins.Mnemonic == Mnemonic.Div) return dividend / divisor > mask;
        var sd = (System.Numerics.BigInteger)dividend;
        if ((dividend >> (2 * bits - 1) & 1) != 0) sd -= System.Numerics.BigInteger.One << (2 * bits);
        var sv = (System.Numerics.BigInteger)divisor;
        if ((divisor >> (bits - 1) & 1) != 0) sv -= System.Numerics.BigInteger.One << bits;
        var q = System.Numerics.BigInteger.Divide(sd, sv); // truncates toward zero, as idiv does
        var lim = System.Numerics.BigInteger.One << (bits - 1);
        return q >= lim || q < -lim;
    }

    // ---- operand access against a NativeState and its scratch page --------------------------------

    public static int GprNumber(Register r) =>
        r is >= Register.AH and <= Register.BH ? r - Register.AH : r.GetFullRegister().GetNumber();

    /// <summary>The bits of the 64-bit GPR a register name covers (AH: bits 8..15).</summary>
    public static ulong RegisterBits(Register r)
    {
        if (r is >= Register.AH and <= Register.BH) return 0xFF00;
        int size = r.GetSize();
        return size == 8 ? ulong.MaxValue : (1UL << (8 * size)) - 1;
    }

    public static ulong ReadRegister(Register r, NativeState s)
    {
        ulong v = s.Gpr[GprNumber(r)];
        if (r is >= Register.AH and <= Register.BH) return (v >> 8) & 0xFF;
        return v & RegisterBits(r);
    }

    /// <summary>Value of operand op (register, immediate or [r15+disp] memory) in state s.</summary>
    public static ulong ReadOperand(in Instruction ins, int op, NativeState s, byte[] scratch)
    {
        switch (ins.GetOpKind(op))
        {
            case OpKind.Register: return ReadRegister(ins.GetOpRegister(op), s);
            case OpKind.Memory:
            {
                ulong addr = ins.MemoryDisplacement64;
                if (ins.MemoryBase != Register.None) addr += s.Gpr[GprNumber(ins.MemoryBase)];
                if (ins.MemoryIndex != Register.None) addr += s.Gpr[GprNumber(ins.MemoryIndex)] * (ulong)ins.MemoryIndexScale;
                long off = (long)(addr - NativeRunner.ScratchAddress);
                int size = ins.MemorySize.GetSize();
                if (off < 0 || off + size > scratch.Length) throw new InvalidOperationException($"memory operand outside the scratch page: {ins}");
                ulong v = 0;
                for (int i = size - 1; i >= 0; i--) v = (v << 8) | scratch[off + i];
                return v;
            }
            default: return ins.GetImmediate(op);
        }
    }
}
