using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp.Exec;

internal static unsafe partial class SystemOps
{
    // ---- interrupt flag, halting, flags --------------------------------------------------------

    private static void Hlt(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        c.Point(PointKind.Halt, x.Ip);
        // A halted CPU's store buffer drains while it sleeps; here it has drained by the time it
        // halts (the control may already have drained it store by store at the point).
        c.DrainStores();
        c.S->Halted = 1;
        c.RequestService();
    }

    private static void Pause(Vcpu c, ref Insn x) => c.Point(PointKind.Spin, x.Ip);

    private static void Cli(Vcpu c, ref Insn x)
    {
        RequireIopl(c);
        c.S->RflagsRaw &= ~Rflags.IF;
    }

    private static void Sti(Vcpu c, ref Insn x)
    {
        RequireIopl(c);
        var s = c.S;
        // The one-instruction shadow: interrupts are recognised only after the next instruction.
        if ((s->RflagsRaw & Rflags.IF) == 0) s->ShadowUntil = s->Retired + 2;
        s->RflagsRaw |= Rflags.IF;
        c.RequestService();
    }

    private static void Clc(Vcpu c, ref Insn x) => c.SetArith(Rflags.CF, 0);
    private static void Stc(Vcpu c, ref Insn x) => c.SetArith(Rflags.CF, Rflags.CF);
    private static void Cmc(Vcpu c, ref Insn x) => c.SetArith(Rflags.CF, c.CF ? 0 : Rflags.CF);
    private static void Cld(Vcpu c, ref Insn x) => c.S->RflagsRaw &= ~Rflags.DF;
    private static void Std(Vcpu c, ref Insn x) => c.S->RflagsRaw |= Rflags.DF;

    private static void Lahf(Vcpu c, ref Insn x) => c.SetReg(Reg.HighByteBase + Reg.Rax, 0, (c.Rflags & 0xD5) | 2);
    private static void Sahf(Vcpu c, ref Insn x) => c.SetArith(Rflags.CF | Rflags.PF | Rflags.AF | Rflags.ZF | Rflags.SF, c.GetReg(Reg.HighByteBase + Reg.Rax, 0));

    private static void Pushfq(Vcpu c, ref Insn x) => c.Push64(c.Rflags & ~(Rflags.RF | Rflags.VM));

    /// <summary>Writes RFLAGS as popfq/iretq do: IOPL only at CPL 0, IF only when CPL &lt;= IOPL.</summary>
    internal static void LoadFlags(Vcpu c, ulong v, int cplForCheck)
    {
        ulong old = c.Rflags;
        ulong writable = Rflags.Writable & ~Rflags.RF;
        if (cplForCheck != 0) writable &= ~Rflags.IOPL;
        if (cplForCheck > (int)((old >> 12) & 3)) writable &= ~Rflags.IF;
        c.Rflags = (old & ~writable) | (v & writable);
        c.RequestService();
    }

    private static void Popfq(Vcpu c, ref Insn x)
    {
        ulong v = c.Read64(c.S->Gpr[Reg.Rsp]);
        c.S->Gpr[Reg.Rsp] += 8;
        LoadFlags(c, v, c.S->Cpl);
    }
}
