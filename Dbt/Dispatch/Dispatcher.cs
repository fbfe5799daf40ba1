using Harness.Dbt.Translate;
using Harness.Machine;
using Harness.Machine.Cpu;

namespace Harness.Dbt.Dispatch;

/// <summary>
/// The dispatcher: the host side of every "pushfq; cli; vmcall" in the code cache. It runs on the
/// entering vCPU's thread with the guest's interrupts off (asserted), never interprets guest code,
/// finds or translates the target, chains a direct edge, writes tx-nextpc into this vCPU's
/// tx-nextpc-loc and leaves through this vCPU's exit stub ("popfq; jmp [tx-nextpc-loc]"): registers
/// and stack already hold the kernel's values when the stub runs, so shared translated code needs no
/// per-CPU addressing.
///
/// Entries are recognised by the vmcall's address (RIP after it, minus the entry length):
/// <list type="bullet">
/// <item>an edge stub: the host table gives (native target, patch site); stack: [flags];</item>
/// <item>the indirect-jmp entry: stack [flags, target]; the target slot is dropped;</item>
/// <item>the indirect-call entry: stack [flags, cache return address, target]; the target slot is
/// replaced by the return address, so the callee sees exactly one return address.</item>
/// </list>
/// </summary>
public sealed class Dispatcher
{
    private readonly Machine.Machine machine;
    private readonly CodeCache.CodeCache cache;
    private readonly BlockTranslator translator;
    private readonly EdgeTable edges;
    private readonly DbtOptions options;
    private readonly DbtStats stats;

    internal Dispatcher(Machine.Machine machine, CodeCache.CodeCache cache, BlockTranslator translator, EdgeTable edges, DbtOptions options, DbtStats stats)
    {
        this.machine = machine;
        this.cache = cache;
        this.translator = translator;
        this.edges = edges;
        this.options = options;
        this.stats = stats;
    }

    /// <summary>The vmcall handler (Machine.Vmcall).</summary>
    public void OnVmcall(Vcpu v)
    {
        ulong entry = v.Rip - CodeCache.CodeCache.DispatcherEntryLength;
        stats.CountEntry(v.Index);
        if ((v.Rflags & Rflags.IF) != 0)
        {
            Fail(v, $"dispatcher entered with interrupts enabled (IF=1) from 0x{entry:x}: every dispatcher entry must run 'pushfq; cli' first");
            return;
        }
        try
        {
            ulong target;
            Edge? edge = null;
            ulong rsp = v.Gpr(Reg.Rsp);
            if (entry == cache.IndirectJmpEntry)
            {
                stats.CountIndirect(v.Index);
                ulong flags = v.Read64(rsp);
                target = v.Read64(rsp + 8);
                v.Write64(rsp + 8, flags);
                v.Gpr(Reg.Rsp) = rsp + 8;
            }
            else if (entry == cache.IndirectCallEntry)
            {
                stats.CountIndirect(v.Index);
                ulong flags = v.Read64(rsp), ret = v.Read64(rsp + 8);
                target = v.Read64(rsp + 16);
                v.Write64(rsp + 16, ret);
                v.Write64(rsp + 8, flags);
                v.Gpr(Reg.Rsp) = rsp + 8;
            }
            else if ((edge = edges.Lookup(entry)) is not null)
            {
                target = edge.Target;
                if (edge.Chained) stats.CountStaleReentry(v.Index);
            }
            else
            {
                Fail(v, $"vmcall at 0x{entry + 2:x} is not a dispatcher entry (a vmcall in translated native code?)");
                return;
            }

            // A target already in the cache (not produced by milestone-1 rules) is entered as is.
            ulong tx = cache.Contains(target) ? target : translator.GetOrTranslate(v, target);
            if (edge is not null && !options.DropChainingPatch) Chain(edge, tx);
            cache.Memory.WriteU64(cache.ToPhys(cache.TxNextPcLoc(v.Index)), tx);
            v.Rip = cache.ExitStub(v.Index);
        }
        catch (Exception ex) when (ex is TranslationException or CodeCache.CodeCacheFullException)
        {
            Fail(v, ex.Message);
        }
    }

    /// <summary>
    /// Points the edge's branch at tx: one aligned 4-byte store of the new rel32 (a vCPU decoding the
    /// page concurrently sees the old or the new displacement, never a mix). Exactly one vCPU patches.
    /// </summary>
    private void Chain(Edge edge, ulong tx)
    {
        if (Interlocked.CompareExchange(ref edge.chained, 1, 0) != 0) return;
        Span<byte> rel = stackalloc byte[4];
        BitConverter.TryWriteBytes(rel, BlockTranslator.Rel32(edge.PatchSite, tx));
        cache.Write(edge.PatchSite, rel);
        // The stub is left as it is: another vCPU may be executing it right now (between its pushfq
        // and vmcall), so rewriting it would make that vCPU run from the middle of new bytes. A vCPU
        // still running the branch from before the patch enters the dispatcher once more and leaves
        // to tx.
        stats.CountChained();
    }

    /// <summary>Translation for a vCPU's start RIP (BSP entry, AP start-up), through Machine.StartRipFilter.</summary>
    public ulong StartAt(Vcpu v, ulong rip)
    {
        try { return cache.Contains(rip) ? rip : translator.GetOrTranslate(v, rip); }
        catch (Exception ex) when (ex is TranslationException or CodeCache.CodeCacheFullException)
        {
            machine.Stop(StopReason.HostError, 0, $"dbt: vCPU {v.Index} cannot start at 0x{rip:x}: {ex.Message}");
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
