using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp.Exec;

internal static unsafe partial class SystemOps
{
    // ---- syscall / sysret / swapgs --------------------------------------------------------------

    private static void Syscall(Vcpu c, ref Insn x)
    {
        var s = c.S;
        if ((s->Efer & EferBits.SCE) == 0) throw GuestFault.Ud();
        s->Gpr[Reg.Rcx] = x.NextIp;
        ulong f = c.Rflags;
        s->Gpr[Reg.R11] = f & ~Rflags.RF;
        c.Rflags = f & ~(s->Fmask | Rflags.RF | Rflags.VM);
        s->Cs = (ushort)((s->Star >> 32) & 0xFFFC);
        s->Ss = (ushort)(((s->Star >> 32) + 8) & 0xFFFC);
        c.Cpl = 0;
        s->Rip = s->Lstar;
        c.RequestService();
    }

    private static void Sysretq(Vcpu c, ref Insn x)
    {
        var s = c.S;
        if ((s->Efer & EferBits.SCE) == 0) throw GuestFault.Ud();
        RequireCpl0(c);
        if (!Vcpu.IsCanonical(s->Gpr[Reg.Rcx])) throw GuestFault.Gp(0);
        c.Rflags = (s->Gpr[Reg.R11] & Rflags.Writable & ~Rflags.RF) | Rflags.Fixed1;
        ulong sel = s->Star >> 48;
        s->Cs = (ushort)((sel + 16) | 3);
        s->Ss = (ushort)((sel + 8) | 3);
        c.Cpl = 3;
        s->Rip = s->Gpr[Reg.Rcx];
        c.RequestService();
    }

    private static void Swapgs(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        var s = c.S;
        (s->GsBase, s->KernelGsBase) = (s->KernelGsBase, s->GsBase);
    }
}
