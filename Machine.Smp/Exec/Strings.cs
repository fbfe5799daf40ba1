using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>
/// movs stos lods cmps scas in every width, with rep/repe/repne and DF. RSI/RDI/RCX are updated
/// per element, so a fault part-way leaves a restartable state (RIP still at the instruction),
/// as on hardware. A whole rep instruction retires as one instruction of guest time.
/// </summary>
internal static unsafe class Strings
{
    public const byte Movs = 0, Stos = 1, Lods = 2, Cmps = 3, Scas = 4;

    public static void Install()
    {
        (Mnemonic[] ms, byte kind)[] families =
        [
            ([Mnemonic.Movsb, Mnemonic.Movsw, Mnemonic.Movsd, Mnemonic.Movsq], Movs),
            ([Mnemonic.Stosb, Mnemonic.Stosw, Mnemonic.Stosd, Mnemonic.Stosq], Stos),
            ([Mnemonic.Lodsb, Mnemonic.Lodsw, Mnemonic.Lodsd, Mnemonic.Lodsq], Lods),
            ([Mnemonic.Cmpsb, Mnemonic.Cmpsw, Mnemonic.Cmpsd, Mnemonic.Cmpsq], Cmps),
            ([Mnemonic.Scasb, Mnemonic.Scasw, Mnemonic.Scasd, Mnemonic.Scasq], Scas),
        ];
        foreach (var (ms, kind) in families)
            foreach (var m in ms) OpTable.Add(m, &Build, kind);
    }

    private static bool Build(ref Insn x, in Instruction ins)
    {
        // Movsd/Cmpsd also name SSE instructions; those have xmm operands and were rejected already.
        int size = ins.Mnemonic switch
        {
            Mnemonic.Movsb or Mnemonic.Stosb or Mnemonic.Lodsb or Mnemonic.Cmpsb or Mnemonic.Scasb => 1,
            Mnemonic.Movsw or Mnemonic.Stosw or Mnemonic.Lodsw or Mnemonic.Cmpsw or Mnemonic.Scasw => 2,
            Mnemonic.Movsd or Mnemonic.Stosd or Mnemonic.Lodsd or Mnemonic.Cmpsd or Mnemonic.Scasd => 4,
            _ => 8,
        };
        x.Size = (byte)size;
        x.SizeLog = (byte)OpTable.SizeLog(size);
        if (ins.MemoryBase is Register.ESI or Register.EDI || ins.Op0Kind is OpKind.MemoryESEDI or OpKind.MemorySegESI
            || (ins.OpCount > 1 && ins.Op1Kind is OpKind.MemoryESEDI or OpKind.MemorySegESI)) x.Flags |= InsnFlags.Addr32;
        x.MSeg = ins.MemorySegment switch { Register.FS => 1, Register.GS => 2, _ => 0 };
        x.Exec = &Exec;
        return true;
    }

    private static void Exec(Vcpu c, ref Insn x)
    {
        var s = c.S;
        int log = x.SizeLog;
        long step = (s->RflagsRaw & Rflags.DF) != 0 ? -(long)x.Size : x.Size;
        bool a32 = x.Has(InsnFlags.Addr32);
        bool rep = x.Has(InsnFlags.Rep) || x.Has(InsnFlags.RepNe);
        ulong segBase = x.MSeg == 0 ? 0 : x.MSeg == 1 ? s->FsBase : s->GsBase;
        int kind = x.Sub;
        while (true)
        {
            if (rep && (a32 ? (uint)s->Gpr[Reg.Rcx] : s->Gpr[Reg.Rcx]) == 0) return;
            ulong si = a32 ? (uint)s->Gpr[Reg.Rsi] : s->Gpr[Reg.Rsi];
            ulong di = a32 ? (uint)s->Gpr[Reg.Rdi] : s->Gpr[Reg.Rdi];
            switch (kind)
            {
                case Movs:
                    c.Store(di, log, c.Load(si + segBase, log));
                    Advance(s, Reg.Rsi, step, a32); Advance(s, Reg.Rdi, step, a32);
                    break;
                case Stos:
                    c.Store(di, log, c.GetReg(Reg.Rax, log));
                    Advance(s, Reg.Rdi, step, a32);
                    break;
                case Lods:
                    c.SetReg(Reg.Rax, log, c.Load(si + segBase, log));
                    Advance(s, Reg.Rsi, step, a32);
                    break;
                case Cmps:
                {
                    ulong a = c.Load(si + segBase, log), b = c.Load(di, log);
                    CmpOp.Do(c, log, a, b);
                    Advance(s, Reg.Rsi, step, a32); Advance(s, Reg.Rdi, step, a32);
                    break;
                }
                default:
                    CmpOp.Do(c, log, c.GetReg(Reg.Rax, log), c.Load(di, log));
                    Advance(s, Reg.Rdi, step, a32);
                    break;
            }
            if (!rep) return;
            if (a32) s->Gpr[Reg.Rcx] = (uint)(s->Gpr[Reg.Rcx] - 1); else s->Gpr[Reg.Rcx]--;
            if (kind >= Cmps)
            {
                if (x.Has(InsnFlags.Rep) && !c.ZF) return;
                if (x.Has(InsnFlags.RepNe) && c.ZF) return;
            }
        }
    }

    private static void Advance(CpuState* s, int r, long step, bool a32)
    {
        if (a32) s->Gpr[r] = (uint)(s->Gpr[r] + (ulong)step);
        else s->Gpr[r] += (ulong)step;
    }
}
