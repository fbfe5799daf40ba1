using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp.Exec;

internal static unsafe partial class SystemOps
{
    // ---- descriptor tables --------------------------------------------------------------------

    // lgdt, lidt, ltr and lldt are serializing: the store buffer drains.
    private static void Lgdt(Vcpu c, ref Insn x) { (c.S->GdtLimit, c.S->GdtBase) = PseudoDescriptor(c, ref x); c.DrainStores(); }
    private static void Lidt(Vcpu c, ref Insn x) { (c.S->IdtLimit, c.S->IdtBase) = PseudoDescriptor(c, ref x); c.DrainStores(); }

    /// <summary>The 10-byte limit:base operand of lgdt/lidt (CPL 0 only).</summary>
    private static (uint Limit, ulong Base) PseudoDescriptor(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        ulong ea = c.Ea(ref x);
        return (c.Read16(ea), c.Read64(ea + 2));
    }

    private static void Sgdt(Vcpu c, ref Insn x) { ulong ea = c.Ea(ref x); c.Write16(ea, (ushort)c.S->GdtLimit); c.Write64(ea + 2, c.S->GdtBase); }
    private static void Sidt(Vcpu c, ref Insn x) { ulong ea = c.Ea(ref x); c.Write16(ea, (ushort)c.S->IdtLimit); c.Write64(ea + 2, c.S->IdtBase); }

    private static ushort Selector(Vcpu c, ref Insn x) => (ushort)(x.Has(InsnFlags.MemOperand) ? c.Read16(c.Ea(ref x)) : c.GetReg(x.R0, 1));

    /// <summary>ltr: loads TR from a 16-byte available-TSS descriptor in the GDT and marks it busy.</summary>
    private static void Ltr(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        var s = c.S;
        ushort sel = Selector(c, ref x);
        uint index = (uint)sel & 0xFFF8;
        if (index == 0 || index + 15 > s->GdtLimit) throw GuestFault.Gp(index);
        ulong lo = c.Read64(s->GdtBase + index), hi = c.Read64(s->GdtBase + index + 8);
        int type = (int)(lo >> 40) & 0xF;
        if (type != 0x9) throw GuestFault.Gp(index);
        if (((lo >> 47) & 1) == 0) throw new GuestFault(Vectors.NP, index);
        ulong b = ((lo >> 16) & 0xFFFFFF) | (((lo >> 56) & 0xFF) << 24) | ((hi & 0xFFFFFFFF) << 32);
        uint limit = (uint)((lo & 0xFFFF) | (((lo >> 48) & 0xF) << 16));
        if (((lo >> 55) & 1) != 0) limit = (limit << 12) | 0xFFF;
        c.Write64(s->GdtBase + index, lo | (0x2UL << 40)); // busy
        s->Tr = sel; s->TrBase = b; s->TrLimit = limit;
        c.DrainStores();
    }

    private static void Str(Vcpu c, ref Insn x)
    {
        if (x.Has(InsnFlags.MemOperand)) c.Write16(c.Ea(ref x), c.S->Tr);
        else c.SetReg(x.R0, x.SizeLog, c.S->Tr);
    }

    private static void Lldt(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        ushort sel = Selector(c, ref x);
        if ((sel & 0xFFFC) != 0) throw new MachineStop(StopReason.Unsupported, $"lldt with a non-null selector 0x{sel:x} at rip 0x{x.Ip:x}: LDTs are not supported");
        c.S->Ldtr = 0;
        c.DrainStores();
    }
}
