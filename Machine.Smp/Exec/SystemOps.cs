using Harness.Machine.Control;
using Harness.Machine.Cpu;
using Harness.Machine.Decode;
using Iced.Intel;

namespace Harness.Machine.Exec;

/// <summary>
/// The system instructions a kernel needs: interrupt flag and flags register, halting, software
/// interrupts and iretq, syscall/sysretq, swapgs, descriptor tables, control and segment
/// registers, MSRs, time, cpuid, port I/O, fences, vmcall, and the two stop handlers.
/// </summary>
internal static unsafe class SystemOps
{
    public static void Install()
    {
        var ends = RuleKind.EndsBlock;
        var branch = RuleKind.Branch | RuleKind.EndsBlock;
        Add(Mnemonic.Hlt, &Hlt, ends);
        Add(Mnemonic.Pause, &Pause);
        Add(Mnemonic.Cli, &Cli, ends);
        Add(Mnemonic.Sti, &Sti, ends);
        Add(Mnemonic.Clc, &Clc);
        Add(Mnemonic.Stc, &Stc);
        Add(Mnemonic.Cmc, &Cmc);
        Add(Mnemonic.Cld, &Cld);
        Add(Mnemonic.Std, &Std);
        Add(Mnemonic.Lahf, &Lahf);
        Add(Mnemonic.Sahf, &Sahf);
        Add(Mnemonic.Pushfq, &Pushfq);
        Add(Mnemonic.Popfq, &Popfq, ends);
        Add(Mnemonic.Int, &IntN, branch);
        Add(Mnemonic.Int3, &Int3, branch);
        Add(Mnemonic.Iretq, &Iretq, branch);
        Add(Mnemonic.Syscall, &Syscall, branch);
        Add(Mnemonic.Sysretq, &Sysretq, branch);
        Add(Mnemonic.Swapgs, &Swapgs, ends);
        Add(Mnemonic.Lgdt, &Lgdt, ends);
        Add(Mnemonic.Lidt, &Lidt, ends);
        Add(Mnemonic.Sgdt, &Sgdt);
        Add(Mnemonic.Sidt, &Sidt);
        Add(Mnemonic.Ltr, &Ltr, ends);
        Add(Mnemonic.Str, &Str);
        Add(Mnemonic.Lldt, &Lldt, ends);
        Add(Mnemonic.Invlpg, &Invlpg, ends);
        Add(Mnemonic.Rdmsr, &Rdmsr);
        Add(Mnemonic.Wrmsr, &Wrmsr, ends);
        Add(Mnemonic.Rdtsc, &Rdtsc);
        Add(Mnemonic.Rdtscp, &Rdtscp);
        Add(Mnemonic.Cpuid, &Cpuid);
        Add(Mnemonic.In, &In);
        Add(Mnemonic.Out, &Out, ends);
        Add(Mnemonic.Mfence, &Mfence);
        Add(Mnemonic.Lfence, &Moves.Nop);
        Add(Mnemonic.Sfence, &Moves.Nop);
        Add(Mnemonic.Vmcall, &Vmcall, branch);
        Add(Mnemonic.Ud2, &InvalidOpcode, ends);
        Add(Mnemonic.Ud0, &InvalidOpcode, ends);
        Add(Mnemonic.Ud1, &InvalidOpcode, ends);
        Add(Mnemonic.Wbinvd, &Wbinvd);
        Add(Mnemonic.Clflush, &Moves.Nop);
        Add(Mnemonic.Retf, &Retf, branch);
    }

    private static void Add(Mnemonic m, delegate*<Vcpu, ref Insn, void> exec, RuleKind kind = RuleKind.Plain)
    {
        handlers[(int)m] = (nint)exec;
        OpTable.Add(m, &BuildFixed, 0, kind);
    }

    private static readonly nint[] handlers = new nint[OpTable.MnemonicCount];

    private static bool BuildFixed(ref Insn x, in Instruction ins)
    {
        x.Exec = (delegate*<Vcpu, ref Insn, void>)handlers[(int)ins.Mnemonic];
        if (ins.Mnemonic == Mnemonic.Retf) x.Size = (byte)(ins.Code == Code.Retfq || ins.Code == Code.Retfq_imm16 ? 8 : ins.Code is Code.Retfd or Code.Retfd_imm16 ? 4 : 2);
        if (ins.Mnemonic is Mnemonic.Pushfq or Mnemonic.Popfq or Mnemonic.Iretq or Mnemonic.Sysretq) x.Size = 8;
        if (ins.Mnemonic is Mnemonic.In or Mnemonic.Out) return BuildIo(ref x, ins);
        if (ins.Mnemonic == Mnemonic.Int) x.Imm = ins.Immediate8;
        return true;
    }

    // ---- stop handlers ------------------------------------------------------------------------

    internal static void InvalidOpcode(Vcpu c, ref Insn x) => throw GuestFault.Ud();

    internal static void Unsupported(Vcpu c, ref Insn x)
    {
        string bytes = c.PeekCode(x.Ip, Math.Max(1, (int)x.Length));
        string text = Disassemble(c, x.Ip, x.Length);
        throw new MachineStop(StopReason.Unsupported,
            $"unsupported instruction at rip 0x{x.Ip:x}: {text} (bytes {bytes}; Iced code {x.Code}){c.Origin(x.Ip)}; the machine implements the integer and system set in docs/isa.md");
    }

    private static string Disassemble(Vcpu c, ulong ip, int len)
    {
        var buf = new byte[Math.Max(len, 1)];
        for (int i = 0; i < buf.Length; i++)
        {
            try { buf[i] = (byte)c.ReadPhys(c.Translate(ip + (ulong)i, Access.Read), 1); } catch (GuestFault) { return "?"; }
        }
        var dec = Decoder.Create(64, new ByteArrayCodeReader(buf), ip);
        dec.Decode(out var ins);
        var fmt = new GasFormatter();
        var o = new StringOutput();
        fmt.Format(ins, o);
        return o.ToStringAndReset();
    }

    // ---- privilege helpers --------------------------------------------------------------------

    private static void RequireCpl0(Vcpu c) { if (c.S->Cpl != 0) throw GuestFault.Gp(0); }
    private static int Iopl(Vcpu c) => (int)(c.S->RflagsRaw >> 12) & 3;
    private static void RequireIopl(Vcpu c) { if (c.S->Cpl > Iopl(c)) throw GuestFault.Gp(0); }

    // ---- interrupt flag, halting, flags --------------------------------------------------------

    private static void Hlt(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        c.Point(PointKind.Halt, x.Ip);
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

    // ---- descriptor tables --------------------------------------------------------------------

    private static void Lgdt(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        ulong ea = c.Ea(ref x);
        uint limit = c.Read16(ea);
        ulong b = c.Read64(ea + 2);
        c.S->GdtLimit = limit; c.S->GdtBase = b;
    }

    private static void Lidt(Vcpu c, ref Insn x)
    {
        RequireCpl0(c);
        ulong ea = c.Ea(ref x);
        uint limit = c.Read16(ea);
        ulong b = c.Read64(ea + 2);
        c.S->IdtLimit = limit; c.S->IdtBase = b;
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
    }

    // ---- control and segment registers -----------------------------------------------------------

    private const byte CrRead = 0x40, CrWrite = 0x80, SregRead = 0x10, SregWrite = 0x20;

    /// <summary>mov to/from CRn and segment registers, pop sreg.</summary>
    internal static bool BuildMovSpecial(ref Insn x, in Instruction ins)
    {
        if (ins.Mnemonic == Mnemonic.Pop)
        {
            x.Sub = (byte)(SregWrite | SregIndex(ins.Op0Register));
            x.Exec = &PopSreg;
            x.Flags |= InsnFlags.EndsBlock;
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
            x.Flags |= InsnFlags.EndsBlock;
            return true;
        }
        x.Sub = (byte)(SregRead | SregIndex(r1));
        x.Exec = &MovFromSreg;
        return true;
    }

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
            case 8: break; // TPR: priorities are not modelled
            default: throw GuestFault.Ud();
        }
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
    }

    private static void Wbinvd(Vcpu c, ref Insn x) => RequireCpl0(c);

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
        c.WriteMsr((uint)s->Gpr[Reg.Rcx], (uint)s->Gpr[Reg.Rax] | (s->Gpr[Reg.Rdx] << 32));
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
    }

    private static void Mfence(Vcpu c, ref Insn x) => Interlocked.MemoryBarrier();

    // ---- port I/O --------------------------------------------------------------------------------

    private const byte PortInDx = 1;

    private static bool BuildIo(ref Insn x, in Instruction ins)
    {
        // in al/ax/eax, imm8|dx  and  out imm8|dx, al/ax/eax
        bool isIn = ins.Mnemonic == Mnemonic.In;
        var dataReg = isIn ? ins.Op0Register : ins.Op1Register;
        var portKind = isIn ? ins.Op1Kind : ins.Op0Kind;
        x.Size = (byte)dataReg.GetSize();
        x.SizeLog = (byte)OpTable.SizeLog(x.Size);
        if (portKind == OpKind.Register) x.Sub = PortInDx; else x.Imm = ins.Immediate8;
        return true;
    }

    private static ushort Port(Vcpu c, ref Insn x) => x.Sub == PortInDx ? (ushort)c.S->Gpr[Reg.Rdx] : (ushort)x.Imm;

    private static void In(Vcpu c, ref Insn x)
    {
        RequireIopl(c);
        c.SetReg(Reg.Rax, x.SizeLog, c.Machine.PortIn(c, Port(c, ref x), x.Size));
    }

    private static void Out(Vcpu c, ref Insn x)
    {
        RequireIopl(c);
        c.Machine.PortOut(c, Port(c, ref x), x.Size, c.GetReg(Reg.Rax, x.SizeLog));
        c.RequestService();
    }

    // ---- vmcall: host call-out -----------------------------------------------------------------

    private static void Vmcall(Vcpu c, ref Insn x)
    {
        var handler = c.Machine.Vmcall;
        if (handler is null || c.S->Cpl != 0) throw GuestFault.Ud();
        c.S->Rip = x.NextIp; // the call-out may redirect execution by setting RIP
        handler(c);
        c.RequestService();
    }
}
