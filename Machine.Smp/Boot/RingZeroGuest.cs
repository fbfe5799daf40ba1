using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Boot;

/// <summary>
/// A small ring-0 guest assembled with Iced (the boot GDT's selectors): an IDT of 64-bit interrupt
/// gates pointing at labels, a data page, and stacks, at fixed offsets above the code. Enough for
/// scenarios on the bare machine and small guests for the DBT; no paging changes, no user mode.
/// Two layouts: identity-mapped at <see cref="Code"/>, or in the -2 GiB kernel alias at
/// <see cref="KernelCode"/>, so that the DBT translates the guest as it does a kernel (as its own
/// snippet tests load theirs).
/// </summary>
public sealed class RingZeroGuest
{
    public const ulong IdtOffset = 0x10000, IdtrOffset = 0x11000, DataOffset = 0x20000, StackTopOffset = 0x80000;
    public const ulong Code = 0x100000, Idt = Code + IdtOffset, Idtr = Code + IdtrOffset, Data = Code + DataOffset, StackTop = Code + StackTopOffset;
    public const ulong KernelCode = BootLayout.KernelAlias + 0x200000, KernelData = KernelCode + DataOffset, KernelStackTop = KernelCode + StackTopOffset;
    /// <summary>AP n's stack top: the BSP's + n * 0x4000.</summary>
    public const ulong ApStackStride = 0x4000;
    /// <summary><see cref="EveryVcpuCalls"/>: AP n's done flag at the data page + n * 64, all of them in its first DoneFlagsBytes.</summary>
    public const ulong DoneFlagsBytes = 0x1000;
    private const ulong DoneFlagStride = 64;
    public const uint MsrIcr = 0x830, MsrLvtTimer = 0x832, MsrInitCount = 0x838, MsrDivide = 0x83E, MsrEoi = 0x80B;

    public readonly Assembler A = new(64);
    private readonly Dictionary<int, Label> gates = [];
    // Virtual addresses of this layout, and virtual minus physical.
    private readonly ulong code, alias;
    private byte[]? bytes;
    private AssemblerResult result;

    public RingZeroGuest(bool inKernelAlias = false) =>
        (code, alias) = inKernelAlias ? (KernelCode, BootLayout.KernelAlias) : (Code, 0UL);

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
        A.lidt(__[code + IdtrOffset]);
        A.mov(rsp, code + StackTopOffset);
    }

    /// <summary>Emits a wrmsr of a constant (clobbers rax, rcx, rdx).</summary>
    public void Wrmsr(uint msr, ulong value) => EmitWrmsr(A, msr, value);

    /// <summary>Emits into any assembler: a wrmsr of a constant (clobbers rax, rcx, rdx).</summary>
    public static void EmitWrmsr(Assembler a, uint msr, ulong value)
    {
        a.mov(ecx, msr);
        a.mov(eax, (uint)value);
        a.mov(edx, (uint)(value >> 32));
        a.wrmsr();
    }

    /// <summary>Emits: the exit port write of status (the machine stops).</summary>
    public void Exit(uint status)
    {
        A.mov(eax, status);
        A.@out(0xF4, eax);
        A.hlt();
    }

    /// <summary>
    /// Emits: fill AP n's mailbox (entry, its stack) and send it a start-up IPI (clobbers rax, rcx,
    /// rdx). fence: an mfence before the IPI, which a guest run under the TSO memory model needs
    /// (wrmsr to the x2APIC ICR does not drain the store buffer, so the AP could read a stale mailbox).
    /// </summary>
    public void StartAp(int n, Label entry, bool fence = false) =>
        EmitStartAp(A, n, a => a.lea(rax, __[entry]), code + StackTopOffset + (ulong)n * ApStackStride, fence);

    /// <summary>
    /// Emits into any assembler the BSP's side of starting AP n: entryToRax puts the entry in rax,
    /// then the mailbox (entry, stackTop, argument 0), the optional mfence and the start-up IPI
    /// (clobbers rax, rcx, rdx).
    /// </summary>
    public static void EmitStartAp(Assembler a, int n, Action<Assembler> entryToRax, ulong stackTop, bool fence)
    {
        ulong mb = BootLayout.MailboxAddress(n);
        entryToRax(a);
        a.mov(__qword_ptr[mb], rax);
        a.mov(rax, stackTop);
        a.mov(__qword_ptr[mb + 8], rax);
        a.mov(__qword_ptr[mb + 16], 0);
        if (fence) a.mfence();
        EmitWrmsr(a, MsrIcr, 0x600 | ((ulong)n << 32));
    }

    /// <summary>
    /// Emits the entries of a guest whose every vCPU calls worker once, with r15 = perCpu(its
    /// number): the BSP runs the <see cref="Prologue"/>, starts the APs, calls worker, waits for each
    /// AP's done flag and exits 0; each AP loads the IDT, calls worker, sets its done flag and parks.
    /// </summary>
    public void EveryVcpuCalls(Label worker, int vcpus, Func<int, ulong> perCpu, bool fence = false)
    {
        ulong DoneFlag(int n) => code + DataOffset + (ulong)n * DoneFlagStride;
        var aps = new Label[vcpus];
        Prologue();
        for (int n = 1; n < vcpus; n++)
        {
            aps[n] = A.CreateLabel($"ap{n}");
            StartAp(n, aps[n], fence);
        }
        A.mov(r15, perCpu(0));
        A.call(worker);
        for (int n = 1; n < vcpus; n++)
        {
            var wait = A.CreateLabel();
            A.Label(ref wait);
            A.pause();
            A.mov(rax, __qword_ptr[DoneFlag(n)]);
            A.test(rax, rax);
            A.jz(wait);
        }
        Exit(0);

        for (int n = 1; n < vcpus; n++)
        {
            var park = A.CreateLabel();
            A.Label(ref aps[n]);
            A.lidt(__[code + IdtrOffset]);
            A.mov(r15, perCpu(n));
            A.call(worker);
            A.mov(__qword_ptr[DoneFlag(n)], 1);
            A.Label(ref park);
            A.cli();
            A.hlt();
            A.jmp(park);
        }
    }

    /// <summary>Assembles once; the image is the same for every run.</summary>
    public byte[] Assemble()
    {
        if (bytes is not null) return bytes;
        using var ms = new MemoryStream();
        result = A.Assemble(new StreamCodeWriter(ms), code, BlockEncoderOptions.ReturnNewInstructionOffsets);
        if ((ulong)ms.Length > IdtOffset) throw new InvalidOperationException("guest code overlaps the IDT");
        return bytes = ms.ToArray();
    }

    public ulong Address(Label l)
    {
        Assemble();
        return result.GetLabelRIP(l);
    }

    /// <summary>Writes the code, the IDT and the IDTR into a machine's memory.</summary>
    public void Load(Machine m)
    {
        m.Memory.Write(code - alias, Assemble());
        var idt = new byte[256 * 16];
        foreach (var (vector, label) in gates)
        {
            ulong target = Address(label);
            ulong lo = (target & 0xFFFF) | ((ulong)BootLayout.KernelCs << 16) | (0x8EUL << 40) | (((target >> 16) & 0xFFFF) << 48);
            BitConverter.TryWriteBytes(idt.AsSpan(vector * 16), lo);
            BitConverter.TryWriteBytes(idt.AsSpan(vector * 16 + 8), target >> 32);
        }
        m.Memory.Write(code + IdtOffset - alias, idt);
        var idtr = new byte[10];
        BitConverter.TryWriteBytes(idtr.AsSpan(0), (ushort)(idt.Length - 1));
        BitConverter.TryWriteBytes(idtr.AsSpan(2), code + IdtOffset);
        m.Memory.Write(code + IdtrOffset - alias, idtr);
    }
}
