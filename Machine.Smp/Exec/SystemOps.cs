using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

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
        const OpFlow ends = OpFlow.EndsBlock, branch = OpFlow.Branch | OpFlow.EndsBlock, clock = OpFlow.ReadsClock;
        OpTable.Add(Mnemonic.Hlt, &Hlt, ends);
        OpTable.Add(Mnemonic.Pause, &Pause);
        OpTable.Add(Mnemonic.Cli, &Cli, ends);
        OpTable.Add(Mnemonic.Sti, &Sti, clock);
        OpTable.Add(Mnemonic.Clc, &Clc);
        OpTable.Add(Mnemonic.Stc, &Stc);
        OpTable.Add(Mnemonic.Cmc, &Cmc);
        OpTable.Add(Mnemonic.Cld, &Cld);
        OpTable.Add(Mnemonic.Std, &Std);
        OpTable.Add(Mnemonic.Lahf, &Lahf);
        OpTable.Add(Mnemonic.Sahf, &Sahf);
        OpTable.Add(Mnemonic.Pushfq, &Pushfq, check: &Quadword);
        OpTable.Add(Mnemonic.Popfq, &Popfq, ends, check: &Quadword);
        OpTable.Add(Mnemonic.Int, &IntN, branch, check: &Vector);
        OpTable.Add(Mnemonic.Int3, &Int3, branch);
        OpTable.Add(Mnemonic.Iretq, &Iretq, branch, check: &Quadword);
        OpTable.Add(Mnemonic.Syscall, &Syscall, branch);
        OpTable.Add(Mnemonic.Sysretq, &Sysretq, branch, check: &Quadword);
        OpTable.Add(Mnemonic.Swapgs, &Swapgs, ends);
        OpTable.Add(Mnemonic.Lgdt, &Lgdt, ends);
        OpTable.Add(Mnemonic.Lidt, &Lidt, ends);
        OpTable.Add(Mnemonic.Sgdt, &Sgdt);
        OpTable.Add(Mnemonic.Sidt, &Sidt);
        OpTable.Add(Mnemonic.Ltr, &Ltr, ends);
        OpTable.Add(Mnemonic.Str, &Str);
        OpTable.Add(Mnemonic.Lldt, &Lldt, ends);
        OpTable.Add(Mnemonic.Invlpg, &Invlpg, ends);
        OpTable.Add(Mnemonic.Rdmsr, &Rdmsr, clock);
        OpTable.Add(Mnemonic.Wrmsr, &Wrmsr, clock);
        OpTable.Add(Mnemonic.Rdtsc, &Rdtsc, clock);
        OpTable.Add(Mnemonic.Rdtscp, &Rdtscp, clock);
        OpTable.Add(Mnemonic.Cpuid, &Cpuid);
        OpTable.Add(Mnemonic.In, &In, check: &BuildIo);
        OpTable.Add(Mnemonic.Out, &Out, ends, check: &BuildIo);
        OpTable.Add(Mnemonic.Mfence, &Mfence);
        OpTable.Add(Mnemonic.Lfence, &Moves.Nop);
        OpTable.Add(Mnemonic.Sfence, &Moves.Nop);
        OpTable.Add(Mnemonic.Vmcall, &Vmcall, branch);
        OpTable.Add(Mnemonic.Ud2, &InvalidOpcode, ends);
        OpTable.Add(Mnemonic.Ud0, &InvalidOpcode, ends);
        OpTable.Add(Mnemonic.Ud1, &InvalidOpcode, ends);
        OpTable.Add(Mnemonic.Wbinvd, &Wbinvd);
        OpTable.Add(Mnemonic.Clflush, &Moves.Nop);
        OpTable.Add(Mnemonic.Retf, &Retf, branch, check: &FarReturnSize);
    }

    // The stack operands of these are 64-bit whatever the extraction saw (none).
    private static bool Quadword(ref Insn x, in Instruction ins) { x.Size = 8; return true; }

    private static bool Vector(ref Insn x, in Instruction ins) { x.Imm = ins.Immediate8; return true; }

    private static bool FarReturnSize(ref Insn x, in Instruction ins)
    {
        x.Size = ins.Code switch { Code.Retfq or Code.Retfq_imm16 => 8, Code.Retfd or Code.Retfd_imm16 => 4, _ => 2 };
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
