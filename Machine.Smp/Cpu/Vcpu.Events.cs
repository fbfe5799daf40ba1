using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp;

/// <summary>Exceptions and interrupts: raising, escalation (#DF, triple fault), delivery through the IDT, and the fault reports.</summary>
public unsafe partial class Vcpu
{
    internal enum EventKind { Fault, Trap, Software, External }

    /// <summary>An instruction raised an exception: deliver it, escalating to #DF and triple fault as the SDM says.</summary>
    private void RaiseException(GuestFault f, ref Insn at)
    {
        ExceptionsDelivered++;
        // The description (bytes, the DBT's origin of the address) is only built when delivery fails:
        // a kernel takes page faults all the time.
        List<string>? chain = null;
        GuestFault current = f;
        int previous = -1;
        while (true)
        {
            try
            {
                if (current.Vector == Vectors.PF) S->Cr2 = current.Cr2;
                var kind = current.Vector == Vectors.BP ? EventKind.Trap : EventKind.Fault;
                ulong ret = kind == EventKind.Trap ? at.NextIp : at.Ip;
                DeliverEvent(current.Vector, kind, current.ErrorCode, ret);
                return;
            }
            catch (GuestFault g)
            {
                chain ??= [Describe(f, ref at)];
                chain.Add($"{g} while delivering {Vectors.Name(current.Vector)}");
                int v1 = current.Vector, v2 = g.Vector;
                if (v1 == Vectors.DF || previous == Vectors.DF)
                {
                    chain.Add("triple fault");
                    throw new MachineStop(StopReason.TripleFault, "triple fault: " + string.Join(" -> ", chain));
                }
                bool escalate = (Vectors.IsContributory(v1) && Vectors.IsContributory(v2))
                             || (v1 == Vectors.PF && (v2 == Vectors.PF || Vectors.IsContributory(v2)));
                previous = v1;
                current = escalate ? new GuestFault(Vectors.DF, 0) : g;
            }
        }
    }

    private string Describe(GuestFault f, ref Insn at)
    {
        string where = $"{f} at rip 0x{at.Ip:x}";
        if (f.Vector == Vectors.UD)
        {
            var bytes = PeekCode(at.Ip, Math.Max((int)at.Length, 8));
            where += $" (bytes {bytes})";
        }
        return where + Origin(at.Ip);
    }

    /// <summary>
    /// For a report about code at ip: what it stands for when it is translated code
    /// (<see cref="HostAgent.OriginOf"/>: the native instruction, its bytes, the rule that emitted it);
    /// "" otherwise.
    /// </summary>
    internal string Origin(ulong ip)
    {
        if (Machine.OriginOf(ip) is not { } o) return "";
        var (text, length) = DisassembleAt(o.NativeRip);
        return $" [translated code: native rip 0x{o.NativeRip:x}: {text} (bytes {PeekCode(o.NativeRip, Math.Max(length, 1))}), by rule '{o.Rule}']";
    }

    /// <summary>The instruction at va in GNU syntax and its length ("?" and 0 when unreadable or invalid); never faults.</summary>
    internal (string Text, int Length) DisassembleAt(ulong va)
    {
        var buf = new List<byte>(15);
        for (int i = 0; i < 15; i++)
        {
            try { buf.Add((byte)ReadPhys(ToPhysical(va + (ulong)i, Access.Read), 1)); }
            catch (GuestFault) { break; }
        }
        var dec = Iced.Intel.Decoder.Create(64, new Iced.Intel.ByteArrayCodeReader(buf.ToArray()), va);
        dec.Decode(out var ins);
        if (ins.IsInvalid) return ("?", 0);
        var o = new Iced.Intel.StringOutput();
        new Iced.Intel.GasFormatter().Format(ins, o);
        return (o.ToStringAndReset(), ins.Length);
    }

    /// <summary>Instruction bytes for reports; never faults.</summary>
    internal string PeekCode(ulong va, int n)
    {
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < n; i++)
        {
            try { sb.Append(ReadPhys(ToPhysical(va + (ulong)i, Access.Read), 1).ToString("x2")).Append(' '); }
            catch (GuestFault) { sb.Append("?? "); }
        }
        return sb.ToString().TrimEnd();
    }

    /// <summary>
    /// Delivers vector through the IDT: 64-bit gate, stack switch to TSS.RSP0 (or IST) on a CPL
    /// change, RSP aligned to 16, SS/RSP/RFLAGS/CS/RIP and the error code pushed. State is only
    /// committed after every push succeeded, so a fault here can escalate cleanly.
    /// </summary>
    internal void DeliverEvent(int vector, EventKind kind, uint errorCode, ulong returnRip)
    {
        if (Machine.Agents.EventDelivering.Length != 0) Machine.EventDelivering(this, vector, kind != EventKind.External, returnRip);
        uint ext = kind == EventKind.External ? 1u : 0u;
        uint idtError = (uint)vector * 8 + 2 + ext;
        if ((ulong)vector * 16 + 15 > S->IdtLimit) throw GuestFault.Gp(idtError);
        ulong savedUser = UserBit;
        UserBit = 0; // descriptor-table and new-stack accesses are supervisor accesses
        try
        {
            ulong gateAddr = S->IdtBase + (ulong)vector * 16;
            ulong lo = Read64(gateAddr), hi = Read64(gateAddr + 8);
            int type = (int)(lo >> 40) & 0xF, dpl = (int)(lo >> 45) & 3;
            bool present = ((lo >> 47) & 1) != 0;
            if (type != 0xE && type != 0xF) throw GuestFault.Gp(idtError);
            if (kind == EventKind.Software && dpl < S->Cpl) throw GuestFault.Gp(idtError);
            if (!present) throw new GuestFault(Vectors.NP, idtError);
            ulong target = (lo & 0xFFFF) | ((lo >> 32) & 0xFFFF0000) | (hi << 32);
            ushort selector = (ushort)(lo >> 16);
            int ist = (int)(lo >> 32) & 7;
            int newCpl = selector & 3;
            if (newCpl > S->Cpl) throw GuestFault.Gp(idtError);
            if (selector < 8) throw GuestFault.Gp(ext);

            ulong rsp = S->Gpr[Reg.Rsp];
            ulong oldRsp = rsp;
            ushort oldSs = S->Ss, oldCs = S->Cs;
            if (ist != 0) rsp = ReadTss(36 + (ist - 1) * 8);
            else if (newCpl < S->Cpl) rsp = ReadTss(4 + newCpl * 8);
            rsp &= ~0xFUL;
            ulong flags = Rflags;
            bool hasError = kind == EventKind.Fault && Vectors.HasErrorCode(vector);
            Write64(rsp - 8, oldSs);
            Write64(rsp - 16, oldRsp);
            Write64(rsp - 24, flags);
            Write64(rsp - 32, oldCs);
            Write64(rsp - 40, returnRip);
            rsp -= 40;
            if (hasError) { rsp -= 8; Write64(rsp, errorCode); }

            // Commit.
            if (newCpl != S->Cpl) S->Ss = (ushort)newCpl;
            S->Gpr[Reg.Rsp] = rsp;
            S->Cs = selector;
            ulong clear = Cpu.Rflags.TF | Cpu.Rflags.NT | Cpu.Rflags.RF | Cpu.Rflags.VM;
            if (type == 0xE) clear |= Cpu.Rflags.IF;
            S->RflagsRaw &= ~clear;
            Cpl = newCpl;
            savedUser = UserBit;
            S->Rip = target;
            S->Halted = 0;
        }
        finally
        {
            UserBit = savedUser;
        }
    }

    private ulong ReadTss(int offset)
    {
        if ((uint)offset + 7 > S->TrLimit) throw new GuestFault(Vectors.TS, S->Tr & 0xFFF8u);
        return Read64(S->TrBase + (ulong)offset);
    }
}
