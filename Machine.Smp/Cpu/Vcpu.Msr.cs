using Harness.Smp.Apic;
using Harness.Smp.Cpu;

namespace Harness.Smp;

/// <summary>Model-specific registers: the system MSRs of a 64-bit kernel and the x2APIC range.</summary>
public unsafe partial class Vcpu
{
    public const uint MsrTsc = 0x10, MsrApicBase = 0x1B, MsrEfer = 0xC0000080, MsrStar = 0xC0000081, MsrLstar = 0xC0000082;
    public const uint MsrCstar = 0xC0000083, MsrFmask = 0xC0000084, MsrFsBase = 0xC0000100, MsrGsBase = 0xC0000101;
    public const uint MsrKernelGsBase = 0xC0000102, MsrTscAux = 0xC0000103;

    internal ulong ReadMsr(uint msr)
    {
        var s = S;
        switch (msr)
        {
            case MsrTsc: return (ulong)s->Retired;
            case MsrApicBase: return 0xFEE00000 | (1 << 11) | (1 << 10) | (Index == 0 ? 1UL << 8 : 0); // enabled, x2APIC, BSP
            case MsrEfer: return s->Efer;
            case MsrStar: return s->Star;
            case MsrLstar: return s->Lstar;
            case MsrCstar: return s->Cstar;
            case MsrFmask: return s->Fmask;
            case MsrFsBase: return s->FsBase;
            case MsrGsBase: return s->GsBase;
            case MsrKernelGsBase: return s->KernelGsBase;
            case MsrTscAux: return s->TscAux;
            case LocalApic.MsrId: return (ulong)Index;
            case LocalApic.MsrVersion: return 0x0005_0014; // version 0x14, 6 LVT entries
            case LocalApic.MsrTpr: return 0;
            case LocalApic.MsrLdr: return (ulong)(((Index >> 4) << 16) | (1 << (Index & 15)));
            case LocalApic.MsrSvr: return Apic.Svr;
            case LocalApic.MsrLvtTimer: return Apic.LvtTimer;
            case LocalApic.MsrInitCount: return Apic.InitialCount;
            case LocalApic.MsrCurCount: return Apic.CurrentCount(s->Retired);
            case LocalApic.MsrDivide: return Apic.DivideConfig;
            case LocalApic.MsrIcr: return 0;
            default: throw GuestFault.Gp(0);
        }
    }

    internal void WriteMsr(uint msr, ulong v)
    {
        var s = S;
        switch (msr)
        {
            case MsrEfer:
                // LME/LMA stay on: the machine only runs long mode. Unknown bits are reserved.
                if ((v & ~(EferBits.SCE | EferBits.LME | EferBits.LMA | EferBits.NXE)) != 0) throw GuestFault.Gp(0);
                s->Efer = v | EferBits.LME | EferBits.LMA;
                FlushTlb();
                break;
            case MsrStar: s->Star = v; break;
            case MsrLstar: if (!IsCanonical(v)) throw GuestFault.Gp(0); s->Lstar = v; break;
            case MsrCstar: s->Cstar = v; break;
            case MsrFmask: s->Fmask = v & 0xFFFF_FFFF; break;
            case MsrFsBase: if (!IsCanonical(v)) throw GuestFault.Gp(0); s->FsBase = v; break;
            case MsrGsBase: if (!IsCanonical(v)) throw GuestFault.Gp(0); s->GsBase = v; break;
            case MsrKernelGsBase: if (!IsCanonical(v)) throw GuestFault.Gp(0); s->KernelGsBase = v; break;
            case MsrTscAux: s->TscAux = (uint)v; break;
            case MsrApicBase: break;  // x2APIC stays enabled
            case LocalApic.MsrTpr: break;
            case LocalApic.MsrSvr: Apic.Svr = (uint)v; break;
            case LocalApic.MsrEoi:
                if (v != 0) throw GuestFault.Gp(0);
                Apic.Eoi();
                RequestService();
                break;
            case LocalApic.MsrLvtTimer:
            case LocalApic.MsrInitCount:
            case LocalApic.MsrDivide:
                Apic.WriteTimer(msr, (uint)v, s->Retired + 1); // counting starts after this instruction
                RequestService();
                break;
            case LocalApic.MsrIcr: Machine.SendIpi(this, v); break;
            default: throw GuestFault.Gp(0);
        }
    }
}
