using Harness.Smp;
using Harness.Smp.Boot;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Guests;

/// <summary>
/// A ring-0 guest for the DBT's tx-nextpc-loc save/restore (the paper's hazard: an interrupt that
/// arrives between the dispatcher exit stub's <c>popfq</c> and its <c>jmp gs:[tx-nextpc-loc]</c>
/// runs a handler whose own dispatcher entries overwrite tx-nextpc-loc). Loaded in the -2 GiB
/// kernel alias like <see cref="JumpTableRaceGuest"/>; it never sets a GS base (the DBT gives it
/// one, and its per-CPU words sit at gs:40/gs:48 there), so every vCPU keeps its own state in the
/// block r15 points at (set before sti, never changed: the timer handler uses it too):
/// <list type="bullet">
/// <item>a main loop, interrupts on, that calls a fresh target <c>A_i</c> through a register at
/// every iteration i (<c>call rax</c>: the inline jumptable lookup, always a miss since A_i was never
/// called on this vCPU). The miss runs with IF=0 from the lookup's cli through the level-2 routine
/// and the dispatcher until the exit stub's popfq restores IF=1: a tick that becomes deliverable
/// anywhere in there is delivered exactly between that popfq and the jmp;</item>
/// <item>a one-shot x2APIC timer (divide by 1: counts instructions), re-armed by the main loop
/// after every tick, <see cref="Period"/> instructions ahead;</item>
/// <item>a timer handler (interrupt gate, IF=0) that honours the frame layout the DBT's entry-mode
/// translation needs, as the kernel's isr_stubs/isr_common do: it pushes a dummy error code and
/// its vector, reserves the redundant slot (<c>sub rsp, 8</c>, 24 bytes below the saved RIP),
/// pushes three registers and writes the slot with <c>mov [rsp+24], rax</c> (translated as the
/// save of gs:[tx-nextpc-loc]). It then counts tick t, records the interrupted RIP, the slot and
/// the main loop's expected target, and calls <c>C_t</c>, a target fresh for this vCPU, through a
/// register: a jumptable miss whose dispatcher exit leaves tx(C_t) in tx-nextpc-loc. Nothing after
/// that call enters the dispatcher; it returns with iretq (the DBT's iretq rule restores
/// tx-nextpc-loc from the slot);</item>
/// <item>every target checks where it runs: <c>A_i</c> that it is the target the main loop just
/// stored in the per-CPU "expected" word and that no handler is running; <c>C_t</c> that the
/// handler is running. A wrong continuation records the target and exits with a status
/// (<see cref="StatusHandlerTargetInMainLoop"/> is the hazard: the interrupted exit stub's jmp
/// went to the handler's last dispatcher target).</item>
/// </list>
/// When every vCPU has taken <see cref="Ticks"/> ticks, the BSP exits 0.
/// </summary>
public sealed class TxNextPcGuest
{
    public const ulong Alias = BootLayout.KernelAlias, Code = RingZeroGuest.KernelCode, Data = RingZeroGuest.KernelData, StackTop = RingZeroGuest.KernelStackTop;
    public const ulong MainTargetPhys = 0x400000, HandlerTargetPhys = 0x480000;
    public const ulong MainTargetBase = Alias + MainTargetPhys, HandlerTargetBase = Alias + HandlerTargetPhys;
    /// <summary>Bytes per target (each is one small position-dependent function).</summary>
    public const int TargetShift = 7;
    public const ulong TargetStride = 1UL << TargetShift;
    /// <summary>Main-loop targets A_0 .. A_{MainTargets-1}: the loop stops with <see cref="StatusOutOfTargets"/> past the last.</summary>
    public const int MainTargets = 1024;
    public const int TimerVector = 0x40;
    public const int StatusHandlerTargetInMainLoop = 2, StatusWrongMainTarget = 3, StatusMainTargetInHandler = 4, StatusOutOfTargets = 5;

    // Per-CPU block (r15), one per vCPU at PerCpuBase + cpu * PerCpuStride, after the done flags.
    public const ulong PerCpuBase = Data + RingZeroGuest.DoneFlagsBytes, PerCpuStride = 0x800;
    public const int OffTicks = 0x00, OffSeen = 0x08, OffIter = 0x10, OffExpected = 0x18, OffInHandler = 0x20, OffMainCalls = 0x28,
        OffHandlerCalls = 0x30, OffWrong = 0x38, OffWrongTarget = 0x40, OffWrongExpected = 0x48;
    /// <summary>
    /// Per tick t (1-based), at Off* + (t - 1) * 8: the interrupted RIP (a code-cache address under
    /// the DBT; the exit stub's jmp when the tick hit the window), the frame's redundant slot after
    /// the entry wrote it (under the DBT: the saved tx-nextpc-loc), and the main loop's expected
    /// target when the tick arrived.
    /// </summary>
    public const int OffTickRips = 0x80, OffTickSlots = 0x280, OffTickExpected = 0x480;
    public const int MaxTicks = 64;

    public int Vcpus { get; }
    /// <summary>Ticks each vCPU takes (each one a chance to hit the window).</summary>
    public int Ticks { get; }
    /// <summary>Timer count (instructions, divide by 1) from the re-arm to the tick.</summary>
    public uint Period { get; }

    private readonly RingZeroGuest image = new(inKernelAlias: true);
    private readonly List<(ulong Address, byte[] Bytes)> targets = [];

    /// <summary>Rounds of a two-instruction countdown loop (interrupts on, no dispatcher) each main-loop iteration runs after its call.</summary>
    public int Work { get; }

    public TxNextPcGuest(int vcpus = 2, int ticks = 8, uint period = 300, int work = 0)
    {
        if (vcpus is < 1 or > 4) throw new ArgumentOutOfRangeException(nameof(vcpus));
        if (ticks is < 1 or > MaxTicks) throw new ArgumentOutOfRangeException(nameof(ticks));
        if (work < 0) throw new ArgumentOutOfRangeException(nameof(work));
        Vcpus = vcpus;
        Ticks = ticks;
        Period = period;
        Work = work;
        AssembleMain();
        for (int i = 0; i < MainTargets; i++) targets.Add((MainTarget(i), AssembleTarget(handlerTarget: false, MainTarget(i))));
        for (int t = 1; t <= ticks; t++) targets.Add((HandlerTarget(t), AssembleTarget(handlerTarget: true, HandlerTarget(t))));
    }

    public static ulong MainTarget(int i) => MainTargetBase + (ulong)i * TargetStride;
    public static ulong HandlerTarget(int t) => HandlerTargetBase + (ulong)t * TargetStride;
    public static bool IsMainTarget(ulong va) => va - MainTargetBase < MainTargets * TargetStride;
    public static bool IsHandlerTarget(ulong va) => va - HandlerTargetBase < (MaxTicks + 1) * TargetStride;
    public static ulong PerCpu(int cpu) => PerCpuBase + (ulong)cpu * PerCpuStride;
    public static ulong Phys(ulong va) => va - Alias;

    /// <summary>A target's name: A_i or C_t.</summary>
    public static string TargetName(ulong va) =>
        IsMainTarget(va) ? $"A_{(va - MainTargetBase) / TargetStride}" : IsHandlerTarget(va) ? $"C_{(va - HandlerTargetBase) / TargetStride}" : $"0x{va:x}";

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
        var outOfTargets = a.CreateLabel("outOfTargets");
        var skip = a.CreateLabel("skip");

        image.EveryVcpuCalls(worker, Vcpus, PerCpu);

        // The worker (interrupts off on entry): timer one-shot, divide by 1; arm; sti; loop.
        a.Label(ref worker);
        image.Wrmsr(RingZeroGuest.MsrDivide, 0xB);
        image.Wrmsr(RingZeroGuest.MsrLvtTimer, TimerVector);
        image.Wrmsr(RingZeroGuest.MsrInitCount, Period);
        a.sti();
        a.Label(ref loop);
        a.mov(rax, __qword_ptr[r15 + OffTicks]);
        a.cmp(rax, __qword_ptr[r15 + OffSeen]);
        a.jne(tick);
        a.mov(rax, __qword_ptr[r15 + OffIter]);
        a.cmp(rax, MainTargets);
        a.jae(outOfTargets);
        a.lea(rcx, __[rax + 1]);
        a.mov(__qword_ptr[r15 + OffIter], rcx);
        a.shl(rax, TargetShift);
        a.mov(rcx, MainTargetBase);
        a.add(rax, rcx);
        a.mov(__qword_ptr[r15 + OffExpected], rax);
        a.call(rax);                                        // a fresh target: a jumptable miss, a dispatcher exit
        if (Work > 0)
        {
            var spin = a.CreateLabel("work");
            a.mov(ecx, Work);
            a.Label(ref spin);
            a.dec(ecx);
            a.jnz(spin);
        }
        a.jmp(loop);

        // A tick was taken: re-arm with interrupts off, sti.
        a.Label(ref tick);
        a.cli();
        a.mov(__qword_ptr[r15 + OffSeen], rax);
        a.cmp(rax, Ticks);
        a.jae(finished);
        image.Wrmsr(RingZeroGuest.MsrInitCount, Period);
        a.sti();
        a.jmp(loop);
        a.Label(ref finished);
        a.ret();                                            // interrupts stay off; the timer is not re-armed
        a.Label(ref outOfTargets);
        image.Exit(StatusOutOfTargets);

        // The timer handler: the frame layout of the kernel's isr_stubs/isr_common (error code,
        // vector, the redundant slot 24 bytes below the saved RIP, written once before any branch),
        // then count the tick, record it, call C_t (a miss: tx-nextpc-loc := tx(C_t)), EOI, iretq.
        image.Handler(TimerVector);
        a.push(0);                                          // error code (none for this vector)
        a.push(TimerVector);
        a.sub(rsp, 8);                                      // the redundant slot
        a.push(rax);
        a.push(rcx);
        a.push(rdx);
        a.mov(__qword_ptr[rsp + 24], rax);                  // the slot's write (translated: the save)
        // Frame: rdx, rcx, rax at rsp+0/8/16, slot +24, vector +32, error code +40, RIP +48.
        a.mov(__qword_ptr[r15 + OffInHandler], 1);
        a.mov(rax, __qword_ptr[r15 + OffTicks]);
        a.inc(rax);
        a.mov(__qword_ptr[r15 + OffTicks], rax);
        a.cmp(rax, Ticks);
        a.ja(skip);
        a.mov(rcx, __qword_ptr[rsp + 48]);
        a.mov(__qword_ptr[r15 + rax * 8 + (OffTickRips - 8)], rcx);
        a.mov(rcx, __qword_ptr[rsp + 24]);
        a.mov(__qword_ptr[r15 + rax * 8 + (OffTickSlots - 8)], rcx);
        a.mov(rcx, __qword_ptr[r15 + OffExpected]);
        a.mov(__qword_ptr[r15 + rax * 8 + (OffTickExpected - 8)], rcx);
        a.shl(rax, TargetShift);
        a.mov(rcx, HandlerTargetBase);
        a.add(rax, rcx);
        a.call(rax);                                        // C_t: the handler's last dispatcher exit
        a.Label(ref skip);
        a.mov(__qword_ptr[r15 + OffInHandler], 0);
        image.Wrmsr(RingZeroGuest.MsrEoi, 0);
        a.pop(rdx);
        a.pop(rcx);
        a.pop(rax);
        a.add(rsp, 24);                                     // slot, vector, error code
        a.iretq();

        image.Assemble();
    }

    /// <summary>
    /// A target at address self: A_i checks it is the main loop's expected target and that no
    /// handler runs; C_t checks that the handler runs. Counts the call and returns.
    /// </summary>
    private static byte[] AssembleTarget(bool handlerTarget, ulong self)
    {
        var a = new Assembler(64);
        var wrong = a.CreateLabel();
        var wrongStatus = a.CreateLabel();
        a.mov(rax, self);
        if (handlerTarget)
        {
            a.cmp(__qword_ptr[r15 + OffInHandler], 1);
            a.jne(wrong);
            a.inc(__qword_ptr[r15 + OffHandlerCalls]);
            a.ret();
            a.Label(ref wrong);
            a.mov(ecx, StatusHandlerTargetInMainLoop);
        }
        else
        {
            var inHandler = a.CreateLabel();
            a.cmp(rax, __qword_ptr[r15 + OffExpected]);
            a.jne(wrong);
            a.cmp(__qword_ptr[r15 + OffInHandler], 0);
            a.jne(inHandler);
            a.inc(__qword_ptr[r15 + OffMainCalls]);
            a.ret();
            a.Label(ref inHandler);
            a.mov(ecx, StatusMainTargetInHandler);
            a.jmp(wrongStatus);
            a.Label(ref wrong);
            a.mov(ecx, StatusWrongMainTarget);
        }
        a.Label(ref wrongStatus);
        a.mov(__qword_ptr[r15 + OffWrongTarget], rax);
        a.mov(rdx, __qword_ptr[r15 + OffExpected]);
        a.mov(__qword_ptr[r15 + OffWrongExpected], rdx);
        a.mov(__qword_ptr[r15 + OffWrong], rcx);
        a.mov(eax, ecx);
        a.@out(0xF4, eax);
        a.hlt();
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), self);
        if ((ulong)ms.Length > TargetStride) throw new InvalidOperationException($"a target is {ms.Length} bytes, more than its {TargetStride}");
        return ms.ToArray();
    }
}
