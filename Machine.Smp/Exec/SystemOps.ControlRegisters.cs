using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

internal static unsafe partial class SystemOps
{
    // ---- control and segment registers -----------------------------------------------------------

    private const byte CrRead = 0x40, CrWrite = 0x80, SregRead = 0x10, SregWrite = 0x20;

    /// <summary>mov to/from CRn and segment registers, pop sreg.</summary>
    internal static bool BuildMovSpecial(ref Insn x, in Instruction ins)
    {
        if (ins.Mnemonic == Mnemonic.Pop)
        {
            x.Sub = (byte)(SregWrite | SregIndex(ins.Op0Register));
            x.Exec = &PopSreg;
            x.Flags |= InsnFlags.EndsBlock | ShadowOf(ins.Op0Register);
            return true;
        }
        var r0 = ins.Op0Kind == OpKind.Register ? ins.Op0Register : Register.None;
        var r1 = ins.Op1Kind == OpKind.Register ? ins.Op1Register : Register.None;
        if (r0.IsCR()) { x.Sub = (byte)(CrWrite | (r0 - Register.CR0)); x.Exec = &MovToCr; x.Flags |= InsnFlags.EndsBlock; return true; }
        if (r1.IsCR()) { x.Sub = (byte)(CrRead | (r1 - Register.CR0)); x.Exec = &MovFromCr; x.R0 = (byte)OpTable.GprIndex(r0); return true; }
        if (r0.IsSegmentRegister())
        {
            x.Sub = (byte)(SregWrite | SregIndex(r0));
            x.Exec = &MovToSreg;
            x.Flags |= InsnFlags.EndsBlock | ShadowOf(r0);
            return true;
        }
        x.Sub = (byte)(SregRead | SregIndex(r1));
        x.Exec = &MovFromSreg;
        return true;
    }

    // A write to SS opens an interrupt shadow measured in guest time (as sti's).
    private static InsnFlags ShadowOf(Register sreg) => sreg == Register.SS ? InsnFlags.ReadsClock : InsnFlags.None;

    private static int SregIndex(Register r) => r switch
    {
        Register.ES => 0, Register.CS => 1, Register.SS => 2, Register.DS => 3, Register.FS => 4, _ => 5,
    };

    private static void MovToCr(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        var s = c.S;
        ulong v = c.GetReg(x.R0, 3);
        switch (x.Sub & 0xF)
        {
            case 0:
                if ((v & Cr0Bits.PG) == 0 || (v & Cr0Bits.PE) == 0)
                    throw new MachineStop(StopReason.Unsupported, $"mov cr0 clearing PG/PE at rip 0x{x.Ip:x}: the machine only runs long mode with paging");
                s->Cr0 = v | Cr0Bits.ET;
                c.FlushTlb();
                break;
            case 2: s->Cr2 = v; break;
            case 3: s->Cr3 = v; c.FlushTlb(); break;
            case 4: s->Cr4 = v; c.FlushTlb(); break;
            case 8: return; // TPR: priorities are not modelled; the one control-register write that is not serializing
            default: throw GuestFault.Ud();
        }
        c.DrainStores(); // serializing
    }

    private static void MovFromCr(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        var s = c.S;
        ulong v = (x.Sub & 0xF) switch
        {
            0 => s->Cr0, 2 => s->Cr2, 3 => s->Cr3, 4 => s->Cr4, 8 => 0,
            _ => throw GuestFault.Ud(),
        };
        c.SetReg(x.R0, 3, v);
    }

    private static ref ushort SregRef(Vcpu c, int i)
    {
        var s = c.S;
        switch (i)
        {
            case 0: return ref s->Es;
            case 1: return ref s->Cs;
            case 2: return ref s->Ss;
            case 3: return ref s->Ds;
            case 4: return ref s->Fs;
            default: return ref s->Gs;
        }
    }

    private static void LoadSreg(Vcpu c, int i, ushort sel, ref Insn x)
    {
        if (i == 1) throw GuestFault.Ud(); // mov cs is invalid
        if (i == 2)
        {
            if ((sel & 3) != c.S->Cpl || (sel & 0xFFFC) == 0 && c.S->Cpl == 3) throw GuestFault.Gp((uint)sel & 0xFFFC);
            // mov ss / pop ss: interrupts are held off for one instruction.
            c.S->ShadowUntil = c.S->Retired + 2;
        }
        // In 64-bit mode the data segment bases are ignored (FS/GS bases come from the MSRs).
        SregRef(c, i) = sel;
    }

    private static void MovToSreg(Vcpu c, ref Insn x) => LoadSreg(c, x.Sub & 7, Selector(c, ref x), ref x);
    private static void MovFromSreg(Vcpu c, ref Insn x)
    {
        ushort v = SregRef(c, x.Sub & 7);
        if (x.Has(InsnFlags.MemOperand)) c.Write16(c.Ea(ref x), v);
        else c.SetReg(x.R0, x.SizeLog == 0 ? 1 : x.SizeLog, v);
    }

    private static void PopSreg(Vcpu c, ref Insn x)
    {
        ushort v = (ushort)c.Read64(c.S->Gpr[Reg.Rsp]);
        LoadSreg(c, x.Sub & 7, v, ref x);
        c.S->Gpr[Reg.Rsp] += 8;
    }

    private static void Invlpg(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        c.FlushTlbPage(c.Ea(ref x));
        c.DrainStores(); // serializing
    }

    private static void Wbinvd(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        c.DrainStores(); // serializing
    }
}
