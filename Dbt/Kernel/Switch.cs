using Harness.Dbt.Cache;
using Harness.Dbt.Dispatch;
using Harness.Dbt.Translate;
using Harness.Smp;
using Harness.Smp.Boot;
using Harness.Smp.Cpu;

namespace Harness.Dbt.Kernel;

/// <summary>A switch operation could not map some code-cache state back to a native one.</summary>
public sealed class SwitchException(string message) : Exception(message);

/// <summary>
/// switchon and switchoff for the whole machine (the paper's section on switching, and its cache
/// replacement: a full cache is switched off, wiped and switched on again). Both run while every
/// other vCPU is parked by a world stop at a state the DBT can map (<see cref="SafePoint"/>).
///
/// switchoff: every parked vCPU's code-cache state becomes the native state (<see cref="Recovery"/>;
/// the exit stub and edge stubs are mapped here), every kernel stack's live words that are
/// code-cache addresses (return addresses, interrupted RIPs with their frames, tx-nextpc values
/// saved in redundant slots) are rewritten to native ones, and the kernel's own IDT and LSTAR are
/// put back. The stacks are found through the kernel's thread list (<c>thread_list</c>,
/// docs/kernel-contract.md section 10) and scanned from each thread's live RSP to its top, rather
/// than walked by frame pointers alone: a frame-pointer walk misses interrupted RIPs (their frames
/// sit between C frames), assembly functions without frames and leaf functions interrupted before
/// their prologue, and the DBT never hands the kernel a code-cache address other than these three
/// kinds, so every such word on a live stack is one of them.
///
/// switchon: shadow IDT, translated LSTAR and per-CPU words for every vCPU, and every parked vCPU
/// in kernel mode continues at the translation of its native RIP. Native return addresses already on
/// stacks stay native: a thread returning through one runs natively until its next kernel entry.
/// </summary>
public sealed unsafe class Switch
{
    public const uint HypercallMagic = 0x444254;
    public const int Query = 0, On = 1, Off = 2;

    private readonly Machine machine;
    private readonly CodeCache cache;
    private readonly BlockTranslator translator;
    private readonly EdgeTable edges;
    private readonly KernelEntries kernel;
    private readonly ExceptionTables exceptionTables;
    private readonly DbtStats stats;
    private readonly ulong? threadList;
    private volatile bool on;
    private readonly bool plantedKeepStacks, plantedExitKeepsFlags, plantedIgnoreStubTargets, plantedIgnoreShadow, plantedIgnoreLevel2Return, plantedSkipOneVcpu, plantedOffByOne;

    internal Switch(Machine machine, CodeCache cache, BlockTranslator translator, EdgeTable edges,
        KernelEntries kernel, ExceptionTables exceptionTables, DbtStats stats, KernelImage? image, bool startOn, DbtOptions planted)
    {
        this.machine = machine;
        this.cache = cache;
        this.translator = translator;
        this.edges = edges;
        this.kernel = kernel;
        this.exceptionTables = exceptionTables;
        this.stats = stats;
        threadList = image?.Symbol("thread_list");
        fixupLookup = image?.Range("exception_fixup");
        // The planted bugs this mechanism can carry (DbtOptions.Planted*): off in every real run.
        plantedKeepStacks = planted.PlantedSwitchoffKeepsStacks;
        plantedExitKeepsFlags = planted.PlantedExitStubRecoveryKeepsFlags;
        plantedIgnoreStubTargets = planted.PlantedStubTargetsIgnoredAtSafePoints;
        plantedIgnoreShadow = planted.PlantedSwitchInInterruptShadow;
        plantedIgnoreLevel2Return = planted.PlantedLevel2ReturnNotRecovered;
        plantedSkipOneVcpu = planted.PlantedFlushSkipsOneVcpu;
        plantedOffByOne = planted.PlantedRecoveryOffByOne;
        on = startOn;
    }

    public bool IsOn => on;

    // ---- where a world stop may park a vCPU --------------------------------------------------------

    /// <summary>Where a world stop may park a vCPU (the DBT agent's <see cref="HostAgent.SafePoint"/>).</summary>
    internal bool SafePoint(Vcpu u) => !on || u.Cpl == 3 || SafeWhenOn(u);

    private bool SafeWhenOn(Vcpu u)
    {
        // Not inside an sti shadow: the instruction after sti must follow it with no interrupt window
        // between them (sti; hlt waits for an interrupt without losing one), but a switch resumes the
        // vCPU at a fresh translation of that instruction, whose block may start with a client's
        // counter snippet: a tick delivered inside the snippet is taken before the hlt, which then
        // sleeps for good (flush-equals-fresh found it under prof: a deadlock in sti; hlt).
        if (u.InInterruptShadow && !plantedIgnoreShadow) return false;
        return SafeInCode(u);
    }

    private bool SafeInCode(Vcpu u)
    {
        ulong rip = u.Rip;
        if (!cache.Contains(rip)) return !InFixupLookup(rip, rip + 1);
        var sorted = Sorted();
        if (BlockTranslator.BlockAt(sorted, rip) is { } b && rip - b.CacheStart < (ulong)b.CacheLength)
        {
            // Not on an interrupt-entry path (an entry-mode block: the kernel has not yet saved
            // tx-nextpc into the frame's redundant slot). Parked there, a vCPU whose interrupt hit
            // the exit stub between popfq and jmp has a frame whose slot still holds a stale word; if
            // that word is a cache address of an older generation, switchoff takes the frame for a
            // stale image and leaves its RIP in the exit stub, while switchon resumes the entry path
            // in normal mode, so the slot gets the kernel's native value and the iretq jumps through
            // it (to 0 or 0x10: idle threads on 4 vCPUs with a 12 KiB cache, about 1 run in 10).
            // Entry paths are short straight-line code: the stop waits until the vCPU has left them.
            if (b.EntrySlotDelta is not null || InFixupLookup(b.NativeStart, b.NativeEnd)) return false;
        }
        if (!TryRecoverCurrent(u, sorted, apply: false)) return false;
        // In the exit stub or an edge stub, the state maps to the native target the vCPU is about
        // to go to: not one inside exception_fixup either. Parked at the exit stub's jmp to the
        // lookup's "found" block, a vCPU resumed after a flush there and read the fixup of an
        // emptied entry (0); and, native there after the flush, it was at no safe point for the
        // next world stop (found by Properties' flush-equals-fresh on generated programs).
        if (fixupLookup is not null && !plantedIgnoreStubTargets && StubTarget(u, sorted) is ulong target && InFixupLookup(target, target + 1)) return false;
        return true;
    }

    /// <summary>The native instruction a vCPU in the exit stub or an edge stub goes to (null elsewhere, or when unknown).</summary>
    private ulong? StubTarget(Vcpu u, TranslatedBlock[] sorted)
    {
        ulong pc = u.Rip;
        if (pc == cache.ExitStub || pc == cache.ExitStub + 1)
        {
            if (PerCpuTx(u) is not ulong tx) return null;
            try { return NativeOf(tx, sorted); }
            catch (SwitchException) { return null; }
        }
        return EdgeRecovery(pc)?.Native;
    }

    // Nor inside the kernel's exception_fixup(rip), which scans the exception tables for the
    // faulting RIP it holds in a register. A flush rewrites that register to the native RIP and
    // empties and refills the DBT's table under the scan: past the slots the native pairs get
    // again, the scan misses ("unhandled #PF in kernel" at a copy_user instruction), and one that
    // had just matched reads whatever entry now sits there (a resume at another fixup). Found by
    // reading the lookup, not by a failure; the loop is short and takes no lock, so the stop waits.
    private readonly (ulong Start, ulong End)? fixupLookup;

    /// <summary>True if native code [from, to) overlaps exception_fixup.</summary>
    private bool InFixupLookup(ulong from, ulong to) => fixupLookup is var (start, end) && from < end && to > start;

    private TranslatedBlock[] Sorted() => translator.SortedBlocks();

    // ---- requests --------------------------------------------------------------------------------

    /// <summary>The hypercall (SYS_DBT through the kernel's dbt_hypercall): returns the previous state for on/off.</summary>
    internal long Hypercall(Vcpu v)
    {
        long cmd = (long)v.Gpr(Reg.Rdi);
        long was = on ? 1 : 0;
        switch (cmd)
        {
            case Query: return was;
            case On: if (!on) SwitchOn(v); return was;
            case Off: if (on) SwitchOff(v, wipe: false); return was;
            default: return -22; // -EINVAL
        }
    }

    /// <summary>
    /// switchon from vCPU by: the others park, then all switch on. by's own RIP is left to the caller
    /// (the dispatcher, the native hypercall, the host event), its per-CPU state is switched like the others'.
    /// </summary>
    public void SwitchOn(Vcpu by) => RunStopped(by, "switchon", () => SwitchOnStopped(by));

    private void SwitchOnStopped(Vcpu by)
    {
        var switchedOn = new List<Vcpu>();
        foreach (var u in machine.Vcpus)
        {
            if (!u.Started) continue;
            u.AsSupervisor(() => kernel.SwitchOn(u));
            // A vCPU between a user-mode entry and its swapgs (or between the exit's swapgs and
            // iretq) stays native until it leaves: translated from there, its edges would enter the
            // dispatcher with the user's GS base.
            if (u != by && !machine.World.IsWaitingRequester(u) && u.Cpl == 0 && !cache.Contains(u.Rip) && (long)u.S->GsBase < 0)
                u.Rip = translator.GetOrTranslate(u, u.Rip);
        }
        on = true;
        stats.CountSwitch(on: true);
    }

    /// <summary>switchoff (and, for a full cache, wipe) from vCPU by, which is at a dispatcher entry and maps its own state.</summary>
    public void SwitchOff(Vcpu by, bool wipe) => RunStopped(by, wipe ? "cache flush" : "switchoff", () => SwitchOffStopped(by, wipe));

    /// <summary>
    /// A full cache: switchoff with wipe, switchon, then step (the translation that found the cache
    /// full), all in one world stop, so that the other vCPUs cannot fill the fresh cache before the
    /// step gets its room (on 4 vCPUs and a 12 KiB pool they did, three flushes in a row). A step
    /// that does not fit an empty cache throws CodeCacheFullException: the cache is too small.
    /// </summary>
    public T FlushThen<T>(Vcpu by, Func<T> step)
    {
        T result = default!;
        RunStopped(by, "cache flush", () =>
        {
            SwitchOffStopped(by, wipe: true);
            SwitchOnStopped(by);
            result = step();
        });
        return result;
    }

    /// <summary>
    /// A switch requested by the host at one of by's instruction boundaries (a test's or a property's
    /// generated point, not a dispatcher entry): switchoff (wipe: a cache flush) and/or switchon, in
    /// one world stop. by's own state is mapped like a parked vCPU's, so by must be at a safe point:
    /// false when it is not (nothing changed; the caller tries again at a later boundary).
    /// </summary>
    public bool TryAtHost(Vcpu by, bool off, bool wipe, bool switchOn)
    {
        if (!SafePoint(by)) return false;
        RunStopped(by, wipe ? "cache flush" : off ? "switchoff" : "switchon", () =>
        {
            if (off && on)
            {
                if (by.Cpl == 0 && cache.Contains(by.Rip) && !TryRecoverCurrent(by, Sorted(), apply: true))
                    throw new SwitchException($"vCPU {by.Index} is at 0x{by.Rip:x}, which has no native equivalent");
                SwitchOffStopped(by, wipe);
            }
            if (switchOn && !on)
            {
                SwitchOnStopped(by);
                if (by.Cpl == 0 && !cache.Contains(by.Rip) && (long)by.S->GsBase < 0) by.Rip = translator.GetOrTranslate(by, by.Rip);
            }
        });
        return true;
    }

    private void SwitchOffStopped(Vcpu by, bool wipe)
    {
        if (threadList is null)
            throw new SwitchException("switchoff needs the kernel's thread list (symbol thread_list) to find every kernel stack");
        var sorted = Sorted();
        // Planted bug (DbtOptions.PlantedFlushSkipsOneVcpu): the last other started vCPU is forgotten.
        var skipped = plantedSkipOneVcpu ? machine.Vcpus.LastOrDefault(u => u.Started && u != by) : null;
        foreach (var u in machine.Vcpus)
        {
            if (!u.Started) continue;
            if (u != by && u != skipped && !machine.World.IsWaitingRequester(u) && u.Cpl == 0 && cache.Contains(u.Rip) && !TryRecoverCurrent(u, sorted, apply: true))
                throw new SwitchException($"vCPU {u.Index} is parked at 0x{u.Rip:x}, which has no native equivalent");
            kernel.SwitchOff(u);
        }
        if (!plantedKeepStacks) RewriteStacks(by, sorted);
        // Kernel code may hold a code-cache address in a register too (exception_fixup's
        // argument is the faulting RIP, read from the frame before the flush rewrote it).
        foreach (var u in machine.Vcpus)
            if (u.Started && u.Cpl == 0)
                for (int g = 0; g < 16; g++)
                    if (g != Reg.Rsp && cache.Contains(u.Gpr(g)) && BlockTranslator.RecoverAt(sorted, u.Gpr(g)) is { Pops: 0, TargetOnStack: false } rr)
                    {
                        u.Gpr(g) = rr.Native;
                        stats.RegistersRewritten++;
                    }
        on = false;
        if (wipe)
        {
            translator.Reset();
            kernel.Wipe();
            exceptionTables.Clear(by);
            stats.CountFlush();
        }
        stats.CountSwitch(on: false);
    }

    private void RunStopped(Vcpu by, string what, Action action)
    {
        Exception? failure = null;
        bool ran = machine.World.Run(by, () =>
        {
            try { action(); }
            catch (Exception e) when (e is SwitchException or TranslationException or GuestFault) { failure = e; }
        });
        if (failure is not null)
            throw new SwitchException($"{what} failed: {(failure is GuestFault g ? $"guest fault {g} reading guest memory" : failure.Message)}");
        if (!ran) throw new SwitchException("the machine stopped during a switch");
    }

    // ---- mapping code-cache states to native ones -----------------------------------------------------

    /// <summary>The native state of a parked vCPU at a code-cache pc; apply: change its state, else only test.</summary>
    private bool TryRecoverCurrent(Vcpu u, TranslatedBlock[] sorted, bool apply)
    {
        ulong pc = u.Rip;
        // The exit stub always maps (through the vCPU's tx-nextpc-loc, read only when applied).
        if (!apply) return pc == cache.ExitStub || pc == cache.ExitStub + 1 || RecoveryOf(u, pc, sorted) is not null;
        if (RecoveryOf(u, pc, sorted) is not { } rec) return false;
        var (rip, rsp, flags) = Apply(u, rec, u.Gpr(Reg.Rsp), sorted);
        if (flags is ulong f) u.Rflags = f;
        u.Gpr(Reg.Rsp) = rsp;
        u.Rip = rip;
        return true;
    }

    /// <summary>The recovery of vCPU u's state at code-cache address pc (in the exit stub: through u's tx-nextpc-loc), or null.</summary>
    private Recovery? RecoveryOf(Vcpu u, ulong pc, TranslatedBlock[] sorted)
    {
        if (pc == cache.ExitStub || pc == cache.ExitStub + 1)
        {
            // popfq (flags still on the stack) or the jmp through tx-nextpc-loc: going to tx.
            ulong tx = PerCpuTx(u) ?? throw new SwitchException($"vCPU {u.Index} is in the exit stub without a kernel per-CPU area");
            // Planted bug (DbtOptions.PlantedExitStubRecoveryKeepsFlags): the flags word not popped.
            int pops = pc == cache.ExitStub && !plantedExitKeepsFlags ? 1 : 0;
            return new Recovery(NativeOf(tx, sorted), pops, pc == cache.ExitStub ? 0 : -1);
        }
        return StubRecovery(pc) ?? BlockTranslator.RecoverAt(sorted, pc, plantedOffByOne);
    }

    /// <summary>The native RIP, RSP and RFLAGS (null: unchanged) a recovery gives a state whose stack pointer is rsp.</summary>
    private (ulong Rip, ulong Rsp, ulong? Flags) Apply(Vcpu v, Recovery r, ulong rsp, TranslatedBlock[] sorted) =>
        r.TargetOnStack
            ? (NativeOf(v.Read64(rsp), sorted), rsp + 8, null)
            : (r.Native, rsp + 8 * (ulong)r.Pops, r.FlagsWord >= 0 ? v.Read64(rsp + 8 * (ulong)r.FlagsWord) : null);

    /// <summary>
    /// DRK-style precise state for a handler (<see cref="DbtOptions.InterruptsViaDispatcher"/>): an
    /// interrupt frame (RIP, CS, RFLAGS, RSP, SS at frame) pushed at a code-cache point becomes the
    /// native state that point stands for, with the recovery points switchoff uses: a point inside
    /// a translation's push prefix is rolled back to the start of its native instruction (pushes
    /// undone, the saved native flags back in the frame), the jumptable's final ret rolls forward to
    /// its target. External interrupts arrive only at native boundaries (the machine holds them
    /// until then: <see cref="Harness.Smp.HostAgent.InterruptBoundary"/>), so only a synchronous
    /// exception can need a rollback. A point with no recovery stops the machine naming it.
    /// </summary>
    internal void NativeFrame(Vcpu v, ulong frame, int vector)
    {
        ulong pc = v.Read64(frame);
        if ((v.Read64(frame + 8) & 3) != 0 || !cache.Contains(pc)) return;
        var sorted = Sorted();
        if (RecoveryOf(v, pc, sorted) is not { } rec)
        {
            string where = translator.OriginOf(pc) is { } o ? $"in the translation of 0x{o.NativeRip:x} by rule {o.Rule}" : "outside any translation";
            throw new SwitchException($"vector {vector} delivered at code-cache address 0x{pc:x} ({where}): no recovery point there, so the handler cannot be given a precise native state");
        }
        var (rip, rsp, flags) = Apply(v, rec, v.Read64(frame + 24), sorted);
        if (flags is ulong f) v.Write64(frame + 16, f);
        v.Write64(frame + 24, rsp);
        v.Write64(frame, rip);
        stats.CountFrameToNative(v.Index, rolledBack: rec.TargetOnStack || rec.Pops != 0 || rec.FlagsWord >= 0);
    }

    /// <summary>
    /// In an edge stub, or at the level-2 jumptable routine's final ret (interrupts may be on there:
    /// an interrupt frame can hold it; the target's tx is on the stack, so the state rolls forward to
    /// it). Flush-equals-fresh found the missing second case: a frame interrupted there was left
    /// alone by switchoff, and after the wipe its iretq returned into the ret, which jumped to the
    /// old generation's tx (a wrmsr with a stale ECX: #GP, triple fault).
    /// </summary>
    private Recovery? StubRecovery(ulong pc) =>
        pc == cache.Level2.HitReturn && !plantedIgnoreLevel2Return ? new Recovery(0, 0, -1, TargetOnStack: true) : EdgeRecovery(pc);

    /// <summary>Inside an edge stub "pushfq; cli; vmcall": the branch was taken (or the call-out not yet run).</summary>
    private Recovery? EdgeRecovery(ulong pc)
    {
        if (pc - cache.Edges.Start >= cache.Edges.Capacity) return null;
        ulong stub = pc & ~(CodeCache.EdgeStubSize - 1);
        if (edges.Lookup(stub) is not { } e) return null;
        return (pc - stub) switch
        {
            0 => new Recovery(e.Resume, 0, -1),
            1 or 2 => new Recovery(e.Resume, 1, 0),
            _ => null,
        };
    }

    private ulong NativeOf(ulong tx, TranslatedBlock[] sorted)
    {
        if (!cache.Contains(tx)) return tx; // already native (a word rewritten earlier in the same scan)
        var r = BlockTranslator.RecoverAt(sorted, tx);
        if (r is { Pops: 0, TargetOnStack: false, FlagsWord: -1 } rec) return rec.Native;
        throw new SwitchException($"tx-nextpc 0x{tx:x} is not the start of a translated instruction");
    }

    // ---- kernel stacks ------------------------------------------------------------------------------

    // The kernel's stacks are KSTACK_SIZE (16 KiB); anything over 1 MiB is not a stack.
    private const ulong MaxKernelStackBytes = 1 << 20;

    private void RewriteStacks(Vcpu by, TranslatedBlock[] sorted)
    {
        var v = by;
        int threads = 0;
        long words = 0;
        var seen = new HashSet<ulong>();
        for (ulong t = v.Read64(threadList!.Value); t != 0; t = v.Read64(t + KernelLayout.ThreadAllNext))
        {
            if (++threads > 100_000) throw new SwitchException("the kernel's thread list does not end");
            if (!seen.Add(t)) throw new SwitchException($"the kernel's thread list loops back to thread 0x{t:x}");
            ulong lo = v.Read64(t + KernelLayout.ThreadKstack), top = v.Read64(t + KernelLayout.ThreadKstackTop);
            // Guest data bounds the scan below: a corrupt thread must not send it through all of memory.
            if (top <= lo || top - lo > MaxKernelStackBytes)
                throw new SwitchException($"thread 0x{t:x} on the kernel's thread list has a kernel stack [0x{lo:x}, 0x{top:x}) that is empty or over {MaxKernelStackBytes / 1024} KiB: the list is corrupt");
            ulong live = 0;
            Vcpu? owner = null;
            foreach (var u in machine.Vcpus)
                if (u.Started && u.Cpl == 0 && u.Gpr(Reg.Rsp) - lo < top - lo) { live = u.Gpr(Reg.Rsp); owner = u; }
            // The tx-nextpc of an interrupted dispatcher exit whose handler has not saved it yet (the
            // owner is still on the entry path): it is still in the owner's per-CPU slot.
            ulong? pendingTx = owner is null ? null : PerCpuTx(owner);
            // Not under any vCPU's RSP: suspended in switch_to (its saved RSP), or running in user mode,
            // or just switched away from (switch_to saved its RSP before on_cpu drops): from the saved
            // RSP up is then either live or dead, and rewriting dead words is harmless.
            if (live == 0) live = v.Read64(t + KernelLayout.ThreadRsp);
            if (live - lo >= top - lo) continue;
            for (ulong a = live & ~7UL; a < top; a += 8)
            {
                ulong w = v.Read64(a);
                if (!cache.Contains(w)) continue;
                if (NativeWord(v, a, top, w, sorted, pendingTx) is { } n)
                {
                    v.Write64(a, n); words++;
                }
                else stats.StackWordsLeft++;
            }
        }
        stats.StackWordsRewritten += words;
    }

    /// <summary>
    /// The native value of a code-cache word at address a on a live kernel stack, fixing its interrupt
    /// frame when it is an interrupted RIP inside a translation; null to leave the word alone. Live
    /// stack ranges also hold stale words (uninitialised locals, padding) that happen to lie in the
    /// cache: a word that is no recovery point, or a mid-translation point without a plausible
    /// interrupt frame around it, is such a word (counted in StackWordsLeft).
    /// </summary>
    private ulong? NativeWord(Vcpu v, ulong a, ulong top, ulong w, TranslatedBlock[] sorted, ulong? pendingTx)
    {
        // A return address pushed by a translated call.
        if (BlockTranslator.IsReturnPoint(sorted, w) && BlockTranslator.RecoverAt(sorted, w) is { Pops: 0, TargetOnStack: false } ret)
            return ret.Native;
        // Otherwise only an interrupt frame's RIP (its frame checked by the kernel's layout) is rewritten,
        // together with the tx-nextpc its entry saved in the frame's redundant slot. Any other
        // cache-range word is stale data: an old return address half overwritten by a string (a NUL
        // byte over its low byte leaves a 16-byte-aligned "block start") must not be "fixed".
        if (!PlausibleFrame(v, a, top)) return null;
        Recovery? r;
        ulong slot = v.Read64(a - 24);
        if (w == cache.ExitStub || w == cache.ExitStub + 1)
        {
            // An interrupted dispatcher exit: its tx-nextpc is in the interrupting frame's redundant slot
            // (or, before the handler saved it there, still in the per-CPU slot).
            ulong saved = slot;
            if (!cache.Contains(saved) && pendingTx is ulong p && cache.Contains(p)) saved = p;
            // A tx that is no block start of this cache generation: a stale frame image, not a live frame.
            if (cache.Contains(saved) && BlockTranslator.RecoverAt(sorted, saved) is not { Pops: 0, TargetOnStack: false }) return null;
            r = new Recovery(NativeOf(saved, sorted), w == cache.ExitStub ? 1 : 0, w == cache.ExitStub ? 0 : -1);
        }
        else r = StubRecovery(w) ?? BlockTranslator.RecoverAt(sorted, w);
        if (r is not { } rec) return null;
        if (cache.Contains(slot) && BlockTranslator.RecoverAt(sorted, slot) is { Pops: 0, TargetOnStack: false } s0)
            v.Write64(a - 24, s0.Native);
        if (rec.Pops == 0 && !rec.TargetOnStack) return rec.Native;
        ulong rsp = v.Read64(a + 24);
        if (rec.TargetOnStack)
        {
            ulong tx = v.Read64(rsp);
            if (cache.Contains(tx) && BlockTranslator.RecoverAt(sorted, tx) is not { Pops: 0, TargetOnStack: false }) return null;
            v.Write64(a + 24, rsp + 8);
            return NativeOf(tx, sorted);
        }
        if (rec.FlagsWord >= 0) v.Write64(a + 16, v.Read64(rsp + 8 * (ulong)rec.FlagsWord));
        v.Write64(a + 24, rsp + 8 * (ulong)rec.Pops);
        return rec.Native;
    }


    /// <summary>
    /// A vCPU's tx-nextpc-loc value, from the kernel's per-CPU area (GS base in the kernel; the
    /// swapped-out KERNEL_GS_BASE between a user-mode entry and its swapgs); null if there is none.
    /// </summary>
    private ulong? PerCpuTx(Vcpu u)
    {
        if (KernelEntries.KernelGsBase(u) is not ulong gs) return null;
        try { return u.Read64(gs + cache.PerCpu.TxNextPcLoc); }
        catch (GuestFault) { return null; }
    }

    /// <summary>
    /// An interrupt frame from kernel mode with a's word as its RIP, by the hardware frame layout:
    /// kernel CS, RFLAGS with its always-one bit, RSP above the frame on the same stack, kernel SS. Stale words that merely look
    /// like a point inside a translation must not have their neighbours "fixed".
    /// </summary>
    private static bool PlausibleFrame(Vcpu v, ulong a, ulong top)
    {
        // Not the vector and error code below RIP: a vCPU parked at the first instructions of an entry
        // path has not pushed them yet, and its frame must still be found.
        if (a + 40 > top) return false;
        ulong cs = v.Read64(a + 8), flags = v.Read64(a + 16), rsp = v.Read64(a + 24), ss = v.Read64(a + 32);
        return cs == BootLayout.KernelCs && (flags & 2) != 0 && flags < 0x400000 && rsp >= a + 40 && rsp <= top && (ss == 0 || ss == BootLayout.KernelDs);
    }}
