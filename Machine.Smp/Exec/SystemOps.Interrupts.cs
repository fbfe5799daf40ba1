using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp.Exec;

internal static unsafe partial class SystemOps
{
    // ---- software interrupts, iretq, far return -----------------------------------------------

    private static void IntN(Vcpu c, ref Insn x) => c.DeliverEvent((int)x.Imm, Vcpu.EventKind.Software, 0, x.NextIp);
    private static void Int3(Vcpu c, ref Insn x) => c.DeliverEvent(Vectors.BP, Vcpu.EventKind.Software, 0, x.NextIp);

    private static void Iretq(Vcpu c, ref Insn x)
    {
        var s = c.S;
        ulong sp = s->Gpr[Reg.Rsp];
        ulong rip = c.Read64(sp), cs = c.Read64(sp + 8), flags = c.Read64(sp + 16), rsp = c.Read64(sp + 24), ss = c.Read64(sp + 32);
        int newCpl = (int)cs & 3;
        if (newCpl < s->Cpl || (cs & 0xFFFC) == 0) throw GuestFault.Gp((uint)cs & 0xFFFC);
        if (!Vcpu.IsCanonical(rip)) throw GuestFault.Gp(0);
        int oldCpl = s->Cpl;
        LoadFlags(c, flags, oldCpl);
        s->Cs = (ushort)cs;
        s->Ss = (ushort)ss;
        s->Gpr[Reg.Rsp] = rsp;
        s->Rip = rip;
        c.Cpl = newCpl;
        c.DrainStores(); // serializing
    }

    /// <summary>lret: same-privilege far return, used by kernels to reload CS after lgdt.</summary>
    private static void Retf(Vcpu c, ref Insn x)
    {
        var s = c.S;
        ulong sp = s->Gpr[Reg.Rsp];
        int w = x.Size;
        ulong rip = c.Read(sp, OpTable.SizeLog(w)), cs = c.Read(sp + (ulong)w, OpTable.SizeLog(w)) & 0xFFFF;
        if (((int)cs & 3) != s->Cpl || (cs & 0xFFFC) == 0)
            throw new MachineStop(StopReason.Unsupported, $"far return to CS 0x{cs:x} at rip 0x{x.Ip:x}{c.Origin(x.Ip)}: only same-privilege far returns are supported");
        s->Gpr[Reg.Rsp] = sp + 2 * (ulong)w;
        s->Cs = (ushort)cs;
        s->Rip = rip;
    }
}
