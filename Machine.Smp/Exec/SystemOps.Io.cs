using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

internal static unsafe partial class SystemOps
{
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
        c.DrainStores(); // I/O instructions are not reordered with loads or stores
        c.SetReg(Reg.Rax, x.SizeLog, c.Machine.PortIn(c, Port(c, ref x), x.Size));
    }

    private static void Out(Vcpu c, ref Insn x)
    {
        RequireIopl(c);
        c.DrainStores();
        c.Machine.PortOut(c, Port(c, ref x), x.Size, c.GetReg(Reg.Rax, x.SizeLog));
        c.RequestService();
    }

    // ---- vmcall: host call-out -----------------------------------------------------------------

    private static void Vmcall(Vcpu c, ref Insn x)
    {
        if (c.Machine.Agents.Vmcall.Length == 0 || c.S->Cpl != 0) throw GuestFault.Ud();
        c.DrainStores(); // a VM exit is serializing: the host agent sees this vCPU's stores in memory
        c.S->Rip = x.NextIp; // the call-out may redirect execution by setting RIP
        if (!c.Machine.HandleVmcall(c)) { c.S->Rip = x.Ip; throw GuestFault.Ud(); }
        if (Seams.Points) c.Machine.Observer?.HostCall(c);
        c.RequestService();
    }
}
