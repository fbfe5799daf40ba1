using Harness.Smp;
using Harness.Smp.Boot;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Guests;

/// <summary>
/// A ring-0 guest for the DBT's jumptable lookup (the paper's "most subtle issue"), loaded in the
/// -2 GiB kernel alias like a kernel (as the DBT's own snippet tests load theirs). Every vCPU runs the same worker with r15 = its per-CPU block
/// (set before sti, never changed: the timer handler uses it too):
/// <list type="bullet">
/// <item>a main loop, interrupts on, that calls <c>A_t</c> through a register (an indirect call: the
/// inline jumptable lookup), and checks the tick count;</item>
/// <item>a one-shot x2APIC timer, re-armed by the main loop at every tick, so a tick always lands
/// <see cref="Period"/> instructions after the re-arm (the same loop phase in every tick of a plain
/// run, where interrupts arrive without delay);</item>
/// <item>a timer handler (interrupts off: an interrupt gate) that counts the tick t and calls
/// <c>C_t</c>, another first-time target, through a register: a jumptable miss whose dispatcher
/// entry installs C_t in level 1, in the slot A_{t-1} occupies;</item>
/// <item>after each tick the main loop switches to the next first-time target A_t, calling it once
/// with interrupts off (a miss that installs A_t in the same level-1 slot again; under the planted
/// bug the level-2 routine and the dispatcher entry would otherwise run with IF=1, which the
/// dispatcher rejects at once), then re-arms the timer.</item>
/// </list>
/// All targets share one level-1 slot: <c>A_t = TargetBase + t * 0x8000</c>, <c>C_t = A_t + 0x4000</c>
/// (the same address bits 4..13). Each target checks the per-CPU "in handler" flag: a handler target
/// running from the main loop (the lookup read the handler's tx after the handler replaced the
/// entry it had matched) records itself and exits <see cref="StatusHandlerTargetInMainLoop"/>; a
/// main-loop target inside the handler exits <see cref="StatusMainTargetInHandler"/>. When every
/// vCPU has seen <see cref="Ticks"/> ticks, the BSP exits 0.
/// </summary>
public sealed class JumpTableRaceGuest
{
    public const ulong Alias = BootLayout.KernelAlias, Code = RingZeroGuest.KernelCode, Data = RingZeroGuest.KernelData, StackTop = RingZeroGuest.KernelStackTop;
    public const ulong TargetPhys = 0x400000;
    /// <summary>Offset of every target in its 16 KiB: all of them share the level-1 slot <c>SlotOffset &amp; 0x3FF0</c>.</summary>
    public const ulong SlotOffset = 0x1A50;
    public const ulong TargetBase = Alias + TargetPhys + SlotOffset;
    public const ulong TargetStride = 0x4000;
    public const int TimerVector = 0x40;
    public const int StatusHandlerTargetInMainLoop = 2, StatusMainTargetInHandler = 3;

    // Per-CPU block (r15), one per vCPU at PerCpuBase + cpu * PerCpuStride, after the done flags.
    public const ulong PerCpuBase = Data + RingZeroGuest.DoneFlagsBytes, PerCpuStride = 0x400;
    public const int OffTicks = 0x00, OffSeen = 0x08, OffTarget = 0x10, OffInHandler = 0x18, OffMainCalls = 0x20, OffHandlerCalls = 0x28,
        OffInterruptedRip = 0x30, OffWrong = 0x38, OffWrongTarget = 0x40;
    /// <summary>Tick t's interrupted RIP (a code-cache address under the DBT) at OffTickRips + (t - 1) * 8.</summary>
    public const int OffTickRips = 0x80;
    public const int MaxTicks = 64;

    public int Vcpus { get; }
    /// <summary>Ticks each vCPU takes (each one a chance for the race).</summary>
    public int Ticks { get; }
    /// <summary>Timer count (instructions, divide by 1) from the re-arm to the tick.</summary>
    public uint Period { get; }

    private readonly RingZeroGuest image = new(inKernelAlias: true);
    private readonly List<(ulong Address, byte[] Bytes)> targets = [];

    public JumpTableRaceGuest(int vcpus = 2, int ticks = 8, uint period = 300)
    {
        if (vcpus is < 1 or > 4) throw new ArgumentOutOfRangeException(nameof(vcpus));
        if (ticks is < 1 or > MaxTicks) throw new ArgumentOutOfRangeException(nameof(ticks));
        Vcpus = vcpus;
        Ticks = ticks;
        Period = period;
        AssembleMain();
        for (int t = 0; t <= ticks; t++)
        {
            targets.Add((MainTarget(t), AssembleTarget(handlerTarget: false, t)));
            targets.Add((HandlerTarget(t), AssembleTarget(handlerTarget: true, t)));
        }
    }

    public static ulong MainTarget(int t) => TargetBase + (ulong)(2 * t) * TargetStride;
    public static ulong HandlerTarget(int t) => TargetBase + (ulong)(2 * t + 1) * TargetStride;
    public static ulong PerCpu(int cpu) => PerCpuBase + (ulong)cpu * PerCpuStride;
    public static ulong Phys(ulong va) => va - Alias;

    /// <summary>Writes code, targets and IDT into a fresh machine's memory.</summary>
    public void Load(Machine m)
    {
        image.Load(m);
        foreach (var (address, bytes) in targets) m.Memory.Write(Phys(address), bytes);
    }

    private void AssembleMain()
    {
        var a = image.A;
        var worker = a.CreateLabel("worker");
        var loop = a.CreateLabel("loop");
        var tick = a.CreateLabel("tick");
        var finished = a.CreateLabel("finished");
        var skip = a.CreateLabel("skip");

        image.EveryVcpuCalls(worker, Vcpus, PerCpu);

        // The worker (interrupts off on entry): timer one-shot, divide by 1; A_0 called once with
        // interrupts off (its jumptable miss); arm; sti; loop.
        a.Label(ref worker);
        image.Wrmsr(RingZeroGuest.MsrDivide, 0xB);
        image.Wrmsr(RingZeroGuest.MsrLvtTimer, TimerVector);
        a.mov(rax, MainTarget(0));
        a.mov(__qword_ptr[r15 + OffTarget], rax);
        a.call(rax);
        image.Wrmsr(RingZeroGuest.MsrInitCount, Period);
        a.sti();
        a.Label(ref loop);
        a.mov(rax, __qword_ptr[r15 + OffTicks]);
        a.cmp(rax, __qword_ptr[r15 + OffSeen]);
        a.jne(tick);
        a.mov(rax, __qword_ptr[r15 + OffTarget]);
        a.call(rax);                                        // the lookup under test
        a.jmp(loop);

        // A tick was taken: with interrupts off, switch to A_t (first call: a miss), re-arm, sti.
        a.Label(ref tick);
        a.cli();
        a.mov(__qword_ptr[r15 + OffSeen], rax);
        a.cmp(rax, Ticks);
        a.jae(finished);
        a.shl(rax, 15);                                     // t * 2 * TargetStride
        a.mov(rcx, MainTarget(0));
        a.add(rax, rcx);
        a.mov(__qword_ptr[r15 + OffTarget], rax);
        a.call(rax);
        image.Wrmsr(RingZeroGuest.MsrInitCount, Period);
        a.sti();
        a.jmp(loop);
        a.Label(ref finished);
        a.ret();                                            // interrupts stay off; the timer is not re-armed

        // The timer handler: count the tick, call C_t (first call on this CPU: a miss), EOI.
        image.Handler(TimerVector);
        a.push(rax);
        a.push(rcx);
        a.push(rdx);
        a.mov(__qword_ptr[r15 + OffInHandler], 1);
        a.mov(rax, __qword_ptr[r15 + OffTicks]);
        a.inc(rax);
        a.mov(__qword_ptr[r15 + OffTicks], rax);
        a.mov(rcx, __qword_ptr[rsp + 24]);                  // the interrupted RIP (a code-cache address)
        a.mov(__qword_ptr[r15 + OffInterruptedRip], rcx);
        a.cmp(rax, Ticks);
        a.ja(skip);
        a.mov(__qword_ptr[r15 + rax * 8 + (OffTickRips - 8)], rcx);
        a.shl(rax, 15);
        a.mov(rcx, HandlerTarget(0));
        a.add(rax, rcx);
        a.call(rax);
        a.Label(ref skip);
        a.mov(__qword_ptr[r15 + OffInHandler], 0);
        image.Wrmsr(RingZeroGuest.MsrEoi, 0);
        a.pop(rdx);
        a.pop(rcx);
        a.pop(rax);
        a.iretq();

        image.Assemble();
    }

    /// <summary>A target (position independent): checks the in-handler flag, counts the call, returns.</summary>
    private static byte[] AssembleTarget(bool handlerTarget, int t)
    {
        var a = new Assembler(64);
        var wrong = a.CreateLabel();
        a.cmp(__qword_ptr[r15 + OffInHandler], handlerTarget ? 1 : 0);
        a.jne(wrong);
        a.inc(__qword_ptr[r15 + (handlerTarget ? OffHandlerCalls : OffMainCalls)]);
        a.ret();
        a.Label(ref wrong);
        a.mov(__qword_ptr[r15 + OffWrong], 1);
        a.mov(rax, (long)(handlerTarget ? HandlerTarget(t) : MainTarget(t)));
        a.mov(__qword_ptr[r15 + OffWrongTarget], rax);
        a.mov(eax, handlerTarget ? StatusHandlerTargetInMainLoop : StatusMainTargetInHandler);
        a.@out(0xF4, eax);
        a.hlt();
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), 0);
        return ms.ToArray();
    }
}
