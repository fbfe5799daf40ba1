using Harness.Smp;
using Harness.Smp.Boot;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Scenarios;

/// <summary>
/// Scenarios on the bare machine (no DBT), each in a planted-bug and a correct form: the explorer
/// must find the bug within a stated budget and replay it from its trace, and the correct form
/// must pass the same budget clean (tests/Verification.Tests; numbers in docs/verification.md).
/// </summary>
public static class MachineScenarios
{
    // ---- lost update ---------------------------------------------------------------------------

    private const ulong Counter = RingZeroGuest.Data, Done0 = RingZeroGuest.Data + 0x40, Done1 = RingZeroGuest.Data + 0x80;

    /// <summary>
    /// Two vCPUs each add 1 to a shared counter `increments` times; the BSP waits for the AP and
    /// exits with the counter. Planted bug (atomic = false): the increment is a plain load, add,
    /// store, so an interleaving between one vCPU's load and store loses the other's update.
    /// Correct form: lock add.
    /// </summary>
    public static Scenario LostUpdate(bool atomic, int increments = 20)
    {
        var g = new RingZeroGuest();
        var a = g.A;
        var ap = a.CreateLabel("ap");
        var worker = a.CreateLabel("worker");
        var wait = a.CreateLabel("wait");
        var loop = a.CreateLabel("loop");
        var park = a.CreateLabel("park");
        g.StartAp(1, ap);
        a.call(worker);
        a.mov(__qword_ptr[Done0], 1);
        a.Label(ref wait);
        a.pause();
        a.mov(rax, __qword_ptr[Done1]);
        a.test(rax, rax);
        a.jz(wait);
        a.mov(rax, __qword_ptr[Counter]);
        a.@out(0xF4, eax);
        a.hlt();

        a.Label(ref ap);
        a.call(worker);
        a.mov(__qword_ptr[Done1], 1);
        a.Label(ref park);
        a.cli();
        a.hlt();
        a.jmp(park);

        a.Label(ref worker);
        a.mov(rbx, Counter);
        a.mov(ecx, increments);
        a.Label(ref loop);
        if (atomic)
            a.@lock.add(__qword_ptr[rbx], 1);
        else
        {
            a.mov(rax, __qword_ptr[rbx]);
            a.add(rax, 1);
            a.mov(__qword_ptr[rbx], rax);
        }
        a.dec(ecx);
        a.jnz(loop);
        a.ret();
        g.Assemble();

        return new Scenario(atomic ? "lost-update-locked" : "lost-update-plain",
            ctx =>
            {
                var m = new Machine(ctx.Options(vcpus: 2, maxInstructions: 1_000_000));
                g.Load(m);
                return m;
            },
            run =>
            {
                run.ExpectExited();
                Verify.That(run.Result.Vcpus[1].Started, "AP 1 never started");
                Verify.That(run.Result.ExitStatus == 2 * increments,
                    $"lost update: the shared counter is {run.Result.ExitStatus} after 2 vCPUs x {increments} increments");
            })
        {
            Entry = RingZeroGuest.Code,
        };
    }

    // ---- interrupt in a two-instruction window ---------------------------------------------------

    private const ulong Slot = RingZeroGuest.Data + 0x100, Ticks = RingZeroGuest.Data + 0x140, InterruptedRip = RingZeroGuest.Data + 0x180;
    private const int TimerVector = 0x40;

    /// <summary>
    /// One vCPU loops over a computation that parks a value in scratch memory for two instructions
    /// (save, then restore into another register, then compare); a one-shot timer interrupt arrives
    /// at a Coyote-chosen instruction. The handler uses the same scratch for its own register save.
    /// Planted bug (scratchOnStack = false): the scratch is a fixed per-CPU slot, so an interrupt
    /// exactly between the save and the restore (one instruction boundary of the loop's
    /// `LoopLength`) clobbers the value, and the guest exits 1. Correct form: the scratch is pushed
    /// on the current stack (the DBT's rule: never global or per-CPU scratch), which an interrupt
    /// frame never overwrites.
    /// </summary>
    public static Scenario InterruptScratch(bool scratchOnStack, int delayBound = 64)
    {
        var g = new RingZeroGuest();
        var a = g.A;
        var loop = a.CreateLabel("loop");
        var corrupted = a.CreateLabel("corrupted");
        g.Prologue();
        g.Wrmsr(RingZeroGuest.MsrDivide, 0xB);            // divide by 1: the count is in instructions
        g.Wrmsr(RingZeroGuest.MsrLvtTimer, TimerVector);  // one-shot, unmasked
        g.Wrmsr(RingZeroGuest.MsrInitCount, 100);
        a.mov(ecx, 1);
        a.xor(edx, edx);
        a.sti();
        a.Label(ref loop);
        a.mov(rax, rcx);
        a.imul(rax, rax, 0x3779B1);                     // a value unlike the handler's (rcx)
        if (scratchOnStack) a.push(rax); else a.mov(__qword_ptr[Slot], rax);
        if (scratchOnStack) a.pop(rbx); else a.mov(rbx, __qword_ptr[Slot]);
        a.cmp(rbx, rax);
        a.jne(corrupted);
        for (int i = 0; i < 4; i++) { a.add(rdx, rax); a.xor(rdx, rcx); }
        a.inc(rcx);
        a.cmp(__qword_ptr[Ticks], 0);
        a.je(loop);
        g.Exit(0);
        a.Label(ref corrupted);
        g.Exit(1);

        g.Handler(TimerVector);
        a.push(rax);
        a.mov(rax, __qword_ptr[rsp + 8]);               // the interrupted RIP, for the report
        a.mov(__qword_ptr[InterruptedRip], rax);
        a.pop(rax);
        if (scratchOnStack) a.push(rcx); else a.mov(__qword_ptr[Slot], rcx);
        a.mov(rcx, __qword_ptr[Ticks]);
        a.inc(rcx);
        a.mov(__qword_ptr[Ticks], rcx);
        a.push(rax);
        a.push(rdx);
        g.Wrmsr(RingZeroGuest.MsrEoi, 0);
        a.pop(rdx);
        a.pop(rax);
        if (scratchOnStack) a.pop(rcx); else a.mov(rcx, __qword_ptr[Slot]);
        a.iretq();
        g.Assemble();

        return new Scenario(scratchOnStack ? "interrupt-scratch-stack" : "interrupt-scratch-percpu",
            ctx =>
            {
                var m = new Machine(ctx.Options(vcpus: 1, maxInstructions: 100_000));
                g.Load(m);
                return m;
            },
            run =>
            {
                ulong rip = run.Machine.Memory.ReadU64(InterruptedRip);
                Verify.That(!(run.Result.Reason == StopReason.Exited && run.Result.ExitStatus == 1),
                    $"the scratch value was clobbered: the timer interrupt arrived at rip 0x{rip:x}, between the save and the restore");
                run.ExpectExit(0);
                Verify.That(run.Result.Vcpus[0].Interrupts == 1, $"expected exactly one timer interrupt, got {run.Result.Vcpus[0].Interrupts}");
            })
        {
            Entry = RingZeroGuest.Code,
            // One vCPU: data accesses cannot interleave with anything, only the interrupt's timing varies.
            Control = new CoyoteOptions { InterruptDelayBound = delayBound, PointFilter = PointFilters.NoDataAccesses },
            NeedsSchedulingPoints = false,
        };
    }

    /// <summary>Instructions per iteration of <see cref="InterruptScratch"/>'s loop (the window is one boundary of them).</summary>
    public const int InterruptScratchLoopLength = 17;

    // ---- the guest kernel ------------------------------------------------------------------------

    /// <summary>
    /// Boots the guest kernel (guest/build/kernel/*.elf) with its self-test only and checks it
    /// exits 0 without a panic. With kernel-broken-spinlock.elf (the spinlock's acquire is a plain
    /// load and store) the planted bug is caught by the kernel's own owner checks: a panic.
    /// With kernelDataPointsOnly, plain loads and stores are scheduling points only inside the
    /// image's writable segments (.data and .bss: locks, run queues, counters), not on stacks or
    /// allocated pages, which cuts a self-test boot from 1.49 M to 428 k steps. The image is read now, so a missing
    /// file fails here and not inside an exploration.
    /// </summary>
    public static Scenario KernelSelftest(string imagePath, int vcpus = 2, string commandLine = "selftest=1 run=",
        bool kernelDataPointsOnly = true, long slice = 1000, MemoryModel memoryModel = MemoryModel.Sc, bool races = false)
    {
        byte[] image = File.ReadAllBytes(imagePath);
        string name = Path.GetFileNameWithoutExtension(imagePath);
        Func<Harness.Smp.Control.PointKind, ulong, bool>? filter = null;
        if (kernelDataPointsOnly)
        {
            var data = Harness.Smp.Boot.ElfLoader.Parse(image, imagePath).Segments.Where(g => (g.Flags & 2) != 0).ToArray();
            if (data.Length != 1) throw new InvalidOperationException($"{imagePath}: expected one writable segment, found {data.Length}");
            filter = PointFilters.SharedRange(data[0].VirtAddr, data[0].VirtAddr + data[0].MemSize);
        }
        var symbols = Harness.Dbt.Kernel.KernelImage.FromElf(image, imagePath);
        var symbolize = Generic.Symbolizer.For(symbols);
        var intended = races ? Races.IntendedRaces.For(symbols, image) : null;
        Races.RaceDetector? detector = null;
        return new Scenario($"{name}-selftest-{vcpus}cpu{(memoryModel == MemoryModel.Tso ? "-tso" : "")}{(races ? "-races" : "")}",
            ctx =>
            {
                var m = new Machine(ctx.Options(vcpus, maxInstructions: 200_000_000, memoryBytes: 64UL << 20, reservedBytes: 16UL << 20,
                    commandLine: commandLine, memoryModel: memoryModel));
                m.LoadElf(image, name);
                if (races) detector = new Races.RaceDetector(m, intended);
                return m;
            },
            run =>
            {
                if (detector is { Races.Count: > 0 } d)
                {
                    bool wentRight = run.Result.Reason == StopReason.Exited && run.Result.ExitStatus == 0 && !run.Console.Contains("panic");
                    Verify.Fail(Races.RaceDetector.Summary(d.Races, symbolize) +
                        (wentRight ? "\n(the run itself went right: exit 0, no panic)" : $"\n(the run also went wrong: {run.Result.Reason}: {run.Result.Message})"));
                }
                var panic = run.Console.Split('\n').FirstOrDefault(l => l.Contains("panic"));
                Verify.That(panic is null, $"kernel panic: {panic}");
                run.ExpectExit(0);
                Verify.That(run.Console.Contains("selftest: kernel ok"), "the self-test did not report success");
            })
        {
            Control = new CoyoteOptions { PointFilter = filter, Slice = slice },
        };
    }
}
