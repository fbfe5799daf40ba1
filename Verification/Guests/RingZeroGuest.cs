using Harness.Machine.Boot;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Guests;

/// <summary>
/// A small ring-0 guest assembled with Iced at <see cref="Code"/> (identity-mapped at boot, the
/// boot GDT's selectors): an IDT of 64-bit interrupt gates pointing at labels, a data page, and
/// stacks. Enough for scenarios on the bare machine; no paging changes, no user mode.
/// </summary>
public sealed class RingZeroGuest
{
    public const ulong Code = 0x100000, Idt = 0x110000, Idtr = 0x111000, Data = 0x120000, StackTop = 0x180000;
    /// <summary>AP n's stack top: StackTop + n * 0x4000.</summary>
    public const ulong ApStackStride = 0x4000;
    public const uint MsrIcr = 0x830, MsrLvtTimer = 0x832, MsrInitCount = 0x838, MsrDivide = 0x83E, MsrEoi = 0x80B;

    public readonly Assembler A = new(64);
    private readonly Dictionary<int, Label> gates = [];
    private byte[]? code;
    private AssemblerResult result;

    /// <summary>Emits a label here and points the interrupt gate for vector at it.</summary>
    public Label Handler(int vector)
    {
        var l = A.CreateLabel($"vector{vector:x}");
        A.Label(ref l);
        gates[vector] = l;
        return l;
    }

    /// <summary>Emits: lidt, and the BSP's stack.</summary>
    public void Prologue()
    {
        A.lidt(__[Idtr]);
        A.mov(rsp, StackTop);
    }

    /// <summary>Emits a wrmsr of a constant (clobbers rax, rcx, rdx).</summary>
    public void Wrmsr(uint msr, ulong value)
    {
        A.mov(ecx, msr);
        A.mov(eax, (uint)value);
        A.mov(edx, (uint)(value >> 32));
        A.wrmsr();
    }

    /// <summary>Emits: the exit port write of status (the machine stops).</summary>
    public void Exit(uint status)
    {
        A.mov(eax, status);
        A.@out(0xF4, eax);
        A.hlt();
    }

    /// <summary>Emits: fill AP n's mailbox (entry, its stack) and send it a start-up IPI (clobbers rax, rcx, rdx).</summary>
    public void StartAp(int n, Label entry)
    {
        ulong mb = BootLayout.MailboxAddress(n);
        A.lea(rax, __[entry]);
        A.mov(__qword_ptr[mb], rax);
        A.mov(rax, StackTop + (ulong)n * ApStackStride);
        A.mov(__qword_ptr[mb + 8], rax);
        A.mov(__qword_ptr[mb + 16], 0);
        Wrmsr(MsrIcr, 0x600 | ((ulong)n << 32));
    }

    /// <summary>Assembles once; the image is the same for every run.</summary>
    public byte[] Assemble()
    {
        if (code is not null) return code;
        using var ms = new MemoryStream();
        result = A.Assemble(new StreamCodeWriter(ms), Code, BlockEncoderOptions.ReturnNewInstructionOffsets);
        if ((ulong)ms.Length > Idt - Code) throw new InvalidOperationException("guest code overlaps the IDT");
        return code = ms.ToArray();
    }

    public ulong Address(Label l)
    {
        Assemble();
        return result.GetLabelRIP(l);
    }

    /// <summary>Writes the code, the IDT and the IDTR into a machine's memory.</summary>
    public void Load(Machine.Machine m)
    {
        var bytes = Assemble();
        m.Memory.Write(Code, bytes);
        var idt = new byte[256 * 16];
        foreach (var (vector, label) in gates)
        {
            ulong target = Address(label);
            ulong lo = (target & 0xFFFF) | ((ulong)BootLayout.KernelCs << 16) | (0x8EUL << 40) | (((target >> 16) & 0xFFFF) << 48);
            BitConverter.TryWriteBytes(idt.AsSpan(vector * 16), lo);
            BitConverter.TryWriteBytes(idt.AsSpan(vector * 16 + 8), target >> 32);
        }
        m.Memory.Write(Idt, idt);
        var idtr = new byte[10];
        BitConverter.TryWriteBytes(idtr.AsSpan(0), (ushort)(idt.Length - 1));
        BitConverter.TryWriteBytes(idtr.AsSpan(2), Idt);
        m.Memory.Write(Idtr, idtr);
    }
}
