using Harness.Machine.Cpu;
using Harness.Machine.Decode;
using Iced.Intel;

namespace Harness.Machine.Exec;

/// <summary>
/// The system instructions a kernel needs, one file per concern: this one installs them and holds
/// the stop handlers and privilege helpers; SystemOps.Flags (interrupt flag, halting, flags),
/// .Interrupts (int n, int3, iretq, lret), .Syscall (syscall, sysretq, swapgs), .DescriptorTables,
/// .ControlRegisters (control and segment registers), .Msr (MSRs, time, cpuid), .Io (port I/O,
/// vmcall). Fences are no-ops or full fences here.
/// </summary>
internal static unsafe partial class SystemOps
{
    public static void Install()
    {
        var ends = OpFlow.EndsBlock;
        var branch = OpFlow.Branch | OpFlow.EndsBlock;
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

    private static void Add(Mnemonic m, delegate*<Vcpu, ref Insn, void> exec, OpFlow kind = OpFlow.Plain)
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
            try { buf[i] = (byte)c.ReadPhys(c.ToPhysical(ip + (ulong)i, Access.Read), 1); } catch (GuestFault) { return "?"; }
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

}
