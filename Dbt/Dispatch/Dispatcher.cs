using Harness.Dbt.Cache;
using Harness.Dbt.Indirect;
using Harness.Dbt.Translate;
using Harness.Smp;
using Harness.Smp.Cpu;

namespace Harness.Dbt.Dispatch;

/// <summary>
/// The dispatcher: the host side of every dispatcher vmcall in the code cache. It runs on the
/// entering vCPU's thread with the guest's interrupts off (asserted), never interprets guest code,
/// finds or translates the target, chains a direct edge or fills the jumptable, writes tx-nextpc
/// into this CPU's tx-nextpc-loc (gs:[PerCpu.TxNextPcLoc]) and leaves through the shared exit stub
/// "popfq; jmp gs:[tx-nextpc-loc]": registers and stack already hold the kernel's values when the
/// stub runs.
///
/// Entries are recognised by the vmcall's address (RIP after it, minus 3):
/// <list type="bullet">
/// <item>an edge stub "pushfq; cli; vmcall": the host table gives (native target, patch site), or a
/// call-out to run first; stack [flags];</item>
/// <item>the jumptable miss at the end of the level-2 routine: stack [flags, target]; the target
/// slot is dropped and the jumptable filled.</item>
/// </list>
/// </summary>
public sealed class Dispatcher
{
    /// <summary>Thrown by a call-out whose instruction native execution would refuse too: the vCPU runs it natively.</summary>
    internal sealed class LeaveToNativeException(string why) : Exception(why);

    private readonly Machine machine;
    private readonly CodeCache cache;
    private readonly BlockTranslator translator;
    private readonly EdgeTable edges;
    private readonly DbtOptions options;
    private readonly DbtStats stats;
    private readonly Kernel.KernelEntries kernel;

    internal Dispatcher(Machine machine, CodeCache cache, BlockTranslator translator, EdgeTable edges, Kernel.KernelEntries kernel, Kernel.Switch sw, DbtOptions options, DbtStats stats)
    {
        Switch = sw;
        this.kernel = kernel;
        this.machine = machine;
        this.cache = cache;
        this.translator = translator;
        this.edges = edges;
        this.options = options;
        this.stats = stats;
        onEntry = options.OnDispatcherEntry;
    }

    // The debug hook (tests' state check), read once: a null test per entry when it is off.
    private readonly Action<Vcpu, DispatcherEntry>? onEntry;

    /// <summary>switchon/switchoff and cache flushes.</summary>
    private readonly Kernel.Switch Switch;

    /// <summary>The vmcall handler (the DBT agent's HostAgent.Vmcall).</summary>
    public unsafe void OnVmcall(Vcpu v)
    {
        ulong site = v.Rip - CodeCache.VmcallLength;
        if (!cache.Contains(site))
        {
            NativeVmcall(v, site);
            return;
        }
        stats.CountEntry(v.Index);
        if ((v.Rflags & Rflags.IF) != 0)
        {
            Fail(v, $"dispatcher entered with interrupts enabled (IF=1) from 0x{site:x}: every dispatcher entry must run 'pushfq; cli' first");
            return;
        }
        if (site == cache.SyscallVmcall)
        {
            SyscallEntry(v);
            return;
        }
        try
        {
            ulong target;
            Edge? edge = null;
            ulong rsp = v.Gpr(Reg.Rsp);
            if (site == cache.IndirectMissVmcall)
            {
                // A jumptable miss: stack [flags, target]; drop the target slot.
                stats.CountIndirect(v.Index);
                ulong flags = v.Read64(rsp);
                target = v.Read64(rsp + 8);
                onEntry?.Invoke(v, new DispatcherEntry(DispatcherEntryKind.JumpTableMiss, site, target, 2, null));
                v.Write64(rsp + 8, flags);
                v.Gpr(Reg.Rsp) = rsp + 8;
            }
            else if ((edge = edges.Lookup(site - CodeCache.EdgeVmcallOffset)) is not null)
            {
                target = edge.Target;
                onEntry?.Invoke(v, new DispatcherEntry(edge.Kind == EdgeKind.CallOut ? DispatcherEntryKind.CallOut : DispatcherEntryKind.Edge, site, edge.Resume, 1, edge));
                if (edge.Kind == EdgeKind.CallOut)
                {
                    stats.CountCallOut(v.Index);
                    target = WithFlush(v, () => edge.Effect!(v, rsp + 8)) ?? edge.Target;
                }
                else if (edge.Chained) stats.CountStaleReentry(v.Index);
            }
            else
            {
                Fail(v, $"vmcall at 0x{site:x} is not a dispatcher entry (a vmcall in translated native code?)");
                return;
            }

            if (!Switch.IsOn)
            {
                // A call-out switched the DBT off: leave to native code.
                LeaveToNative(v, target);
                return;
            }
            // DRK-style gate and iretq stubs run with the user's GS on the way in from or out to user mode,
            // and so do the first blocks of a handler entered from user mode (before its swapgs): the
            // DRK-style dispatcher does not rely on the kernel's GS, it leaves by setting RIP. (The
            // paper's design translates those blocks eagerly and never enters the dispatcher there.)
            ulong gs = v.S->GsBase;
            bool kernelGs = gs != 0 && (long)gs < 0;
            bool direct = edge is { ExitsDirectly: true } || (!kernelGs && options.InterruptsViaDispatcher);
            if (!direct && !kernelGs)
            {
                Fail(v, $"dispatcher entered with GS base 0x{gs:x}, not a kernel per-CPU area (an edge on a path that runs with the user's GS?)");
                return;
            }
            long flushes = stats.Flushes;
            ulong tx;
            try { tx = cache.Contains(target) ? target : Translate(v, target); }
            catch (UnreadableCodeException)
            {
                // Natively the fetch at target faults (or reads all-ones outside RAM): let the
                // interpreter fetch there, so the guest sees the same fault, with the same RIP.
                LeaveToNative(v, target);
                return;
            }
            bool flushed = stats.Flushes != flushes; // the edge and its patch site belong to the wiped cache
            if (edge is null && !cache.Contains(target)) JumpTable.Insert(v, kernel.JumpTableOf(v.Index), target, tx);
            if (edge is { Kind: not EdgeKind.CallOut } && !flushed && !options.DropChainingPatch) edges.Chain(v, edge, tx);
            if (direct)
            {
                LeaveToNative(v, tx);
                return;
            }
            v.Write64(gs + cache.PerCpu.TxNextPcLoc, tx);
            v.Rip = cache.ExitStub;
        }
        catch (LeaveToNativeException)
        {
            // A call-out that cannot emulate its instruction, which native execution also refuses
            // (a far return to another privilege): run it natively, with the native outcome.
            LeaveToNative(v, edges.Lookup(site - CodeCache.EdgeVmcallOffset)!.Resume);
        }
        catch (Exception ex) when (ex is TranslationException or CodeCacheFullException or GuestFault or Kernel.SwitchException)
        {
            Fail(v, ex is GuestFault g ? $"guest memory fault in the dispatcher ({g.Message})" : ex.Message);
        }
    }

    /// <summary>
    /// DRK-style syscall entry: LSTAR is the stub page's vmcall, so syscall arrives here with the
    /// user's RSP and GS and IF masked (nothing was pushed); the dispatcher goes to the translation of
    /// the kernel's entry.
    /// </summary>
    private void SyscallEntry(Vcpu v)
    {
        stats.CountSyscallEntry(v.Index);
        ulong native = kernel.GuestLstar(v.Index);
        try { v.Rip = Switch.IsOn ? Translate(v, native) : native; }
        catch (UnreadableCodeException) { v.Rip = native; } // natively the entry's fetch faults: so it does here
        catch (Exception ex) when (ex is TranslationException or CodeCacheFullException or GuestFault or Kernel.SwitchException)
        {
            Fail(v, ex is GuestFault g ? $"guest memory fault in the dispatcher ({g.Message})" : ex.Message);
        }
    }

    /// <summary>Leaves the dispatcher at rip without the exit stub (native code, or a translation for the DRK-style direct exits): the saved flags popped, RSP back to the native value.</summary>
    private static void LeaveToNative(Vcpu v, ulong rip)
    {
        ulong sp = v.Gpr(Reg.Rsp);
        v.Rflags = v.Read64(sp);
        v.Gpr(Reg.Rsp) = sp + 8;
        v.Rip = rip;
    }

    /// <summary>
    /// Runs a call-out; if the code cache is full, flushes it (switchoff, wipe, switchon with the
    /// other vCPUs parked) and runs it once more. A call-out may stop the world itself (switchoff),
    /// so unlike a translation it cannot run inside the flush's stop.
    /// </summary>
    private T WithFlush<T>(Vcpu v, Func<T> step)
    {
        // Other vCPUs run again between the flush and the retry and may fill a tiny cache first.
        for (int attempt = 1; ; attempt++)
        {
            try { return step(); }
            catch (CodeCacheFullException) when (attempt < 4)
            {
                Switch.SwitchOff(v, wipe: true);
                Switch.SwitchOn(v);
            }
            catch (CodeCacheFullException e)
            {
                throw new CodeCacheFullException($"{e.Message}; still full after {attempt - 1} flushes: the cache is too small for the working set");
            }
        }
    }

    /// <summary>
    /// The translation of target; if the code cache is full, flushes it and translates target in the
    /// same world stop (<see cref="Kernel.Switch.FlushThen"/>), so no other vCPU fills it first.
    /// </summary>
    private ulong Translate(Vcpu v, ulong target)
    {
        try { return translator.GetOrTranslate(v, target); }
        catch (CodeCacheFullException)
        {
            try { return Switch.FlushThen(v, () => translator.GetOrTranslate(v, target)); }
            catch (CodeCacheFullException e)
            {
                throw new CodeCacheFullException($"{e.Message}; still full right after a flush, with only the other vCPUs' current paths and this translation in it: the cache is too small");
            }
        }
    }

    /// <summary>A vmcall in native code: the kernel's DBT hypercall while the DBT is off.</summary>
    private void NativeVmcall(Vcpu v, ulong site)
    {
        if ((uint)v.Gpr(Reg.Rax) != Kernel.Switch.HypercallMagic)
        {
            Fail(v, $"vmcall at 0x{site:x} with RAX 0x{v.Gpr(Reg.Rax):x} is neither a dispatcher entry nor the DBT hypercall");
            return;
        }
        try
        {
            v.Gpr(Reg.Rax) = (ulong)Switch.Hypercall(v);
            // RIP is already past the vmcall; after a switchon, continue at its translation.
            if (Switch.IsOn && v.Cpl == 0 && !cache.Contains(v.Rip)) v.Rip = translator.GetOrTranslate(v, v.Rip);
        }
        catch (Exception ex) when (ex is TranslationException or CodeCacheFullException or GuestFault or Kernel.SwitchException)
        {
            Fail(v, ex.Message);
        }
    }


    /// <summary>Switchon at a vCPU's start (BSP entry, AP start-up), through the DBT agent's HostAgent.StartRip: the translation of its start RIP.</summary>
    public ulong StartAt(Vcpu v, ulong rip)
    {
        try
        {
            if (!Switch.IsOn) return rip;
            kernel.SwitchOn(v);
            return cache.Contains(rip) ? rip : translator.GetOrTranslate(v, rip);
        }
        catch (UnreadableCodeException) { return rip; } // natively the first fetch faults: so it does here
        catch (Exception ex) when (ex is TranslationException or CodeCacheFullException or GuestFault)
        {
            machine.Stop(StopReason.HostError, 0, $"dbt: vCPU {v.Index} cannot start at 0x{rip:x}: {ex.Message}");
            return cache.DeadEnd;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A bug (a rule's: RuleFailedException): this runs on the caller of Machine.Run for the
            // BSP, so it is reported as a host exception with its stack, not thrown at the caller.
            machine.HostFault(v, ex);
            return cache.DeadEnd;
        }
    }

    private void Fail(Vcpu v, string why)
    {
        stats.Failure ??= why;
        machine.Stop(StopReason.HostError, 0, $"dbt: vCPU {v.Index}: {why}");
        v.Rip = cache.DeadEnd;
    }
}
