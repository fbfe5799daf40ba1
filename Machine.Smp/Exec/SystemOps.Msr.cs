using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp.Exec;

internal static unsafe partial class SystemOps
{
    // ---- MSRs, time, cpuid -----------------------------------------------------------------------

    private static void Rdmsr(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        var s = c.S;
        ulong v = c.ReadMsr((uint)s->Gpr[Reg.Rcx]);
        s->Gpr[Reg.Rax] = (uint)v;
        s->Gpr[Reg.Rdx] = v >> 32;
    }

    private static void Wrmsr(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        var s = c.S;
        uint msr = (uint)s->Gpr[Reg.Rcx];
        // wrmsr is serializing except to the x2APIC registers and IA32_TSC_DEADLINE (SDM vol. 3
        // 9.3): an IPI sent through the ICR may overtake the sender's buffered stores, which is why
        // Linux puts mfence before it (weak_wrmsr_fence).
        if (msr is not (>= 0x800 and <= 0x8FF or 0x6E0)) c.DrainStores();
        c.WriteMsr(msr, (uint)s->Gpr[Reg.Rax] | (s->Gpr[Reg.Rdx] << 32));
        c.RequestService();
    }

    private static void Rdtsc(Vcpu c, ref Insn x)
    {
        var s = c.S;
        if ((s->Cr4 & Cr4Bits.TSD) != 0 && s->Cpl != 0) throw GuestFault.Gp(0);
        ulong t = (ulong)s->Retired;
        s->Gpr[Reg.Rax] = (uint)t;
        s->Gpr[Reg.Rdx] = t >> 32;
    }

    private static void Rdtscp(Vcpu c, ref Insn x)
    {
        Rdtsc(c, ref x);
        c.S->Gpr[Reg.Rcx] = (uint)c.S->TscAux;
    }

    private static void Cpuid(Vcpu c, ref Insn x)
    {
        var s = c.S;
        var (a, b, cc, d) = CpuidTable.Leaf(c, (uint)s->Gpr[Reg.Rax], (uint)s->Gpr[Reg.Rcx]);
        s->Gpr[Reg.Rax] = a; s->Gpr[Reg.Rbx] = b; s->Gpr[Reg.Rcx] = cc; s->Gpr[Reg.Rdx] = d;
        c.DrainStores(); // serializing
    }

    // lfence and sfence need nothing under TSO: loads are not reordered with loads, nor stores with
    // stores (write-back memory; non-temporal stores are ordinary stores here).
    private static void Mfence(Vcpu c, ref Insn x)
    {
        Interlocked.MemoryBarrier();
        c.DrainStores();
    }
}
