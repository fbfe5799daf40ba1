using Harness.Dbt.Cache;
namespace Harness.Dbt;

/// <summary>
/// Translation statistics. Block counts are updated under the translator lock; dispatcher counters
/// are per vCPU (each written only by its own vCPU's thread, on separate cache lines) and summed on read.
/// </summary>
public sealed class DbtStats
{
    private const int Stride = 8; // longs per vCPU: one 64-byte line
    private readonly long[] perVcpu;
    private long blocks, nativeInstructions, nativeBytes, cacheBytes, edgeStubs, chained;

    public DbtStats(int vcpus) => perVcpu = new long[(vcpus + 1) * Stride];

    internal void AddBlock(int insns, long native, long cache, int edges)
    {
        Interlocked.Increment(ref blocks);
        Interlocked.Add(ref nativeInstructions, insns);
        Interlocked.Add(ref nativeBytes, native);
        Interlocked.Add(ref cacheBytes, cache);
        Interlocked.Add(ref edgeStubs, edges);
    }

    internal void CountEntry(int vcpu) => perVcpu[vcpu * Stride]++;
    internal void CountIndirect(int vcpu) => perVcpu[vcpu * Stride + 1]++;
    internal void CountChained() => Interlocked.Increment(ref chained);
    internal void CountStaleReentry(int vcpu) => perVcpu[vcpu * Stride + 2]++;
    internal void CountCallOut(int vcpu) => perVcpu[vcpu * Stride + 3]++;
    internal void CountGateEntry(int vcpu) => perVcpu[vcpu * Stride + 4]++;
    internal void CountSyscallEntry(int vcpu) => perVcpu[vcpu * Stride + 5]++;
    internal void CountFrameToNative(int vcpu, bool rolledBack) { perVcpu[vcpu * Stride + 6]++; if (rolledBack) perVcpu[vcpu * Stride + 7]++; }

    private long switchOns, switchOffs, flushes;
    internal void CountSwitch(bool on) => Interlocked.Increment(ref on ? ref switchOns : ref switchOffs);
    internal void CountFlush() => Interlocked.Increment(ref flushes);
    public long SwitchOns => Volatile.Read(ref switchOns);
    public long SwitchOffs => Volatile.Read(ref switchOffs);
    /// <summary>Cache-full flushes (switchoff, wipe, switchon).</summary>
    public long Flushes => Volatile.Read(ref flushes);
    /// <summary>Code-cache words on kernel stacks rewritten to native ones by switchoffs.</summary>
    public long StackWordsRewritten { get; internal set; }
    /// <summary>Stale code-cache-range words on live kernel stacks that are no return address or interrupted RIP (left alone).</summary>
    public long StackWordsLeft { get; internal set; }
    /// <summary>Kernel registers holding code-cache addresses rewritten to native ones by switchoffs.</summary>
    public long RegistersRewritten { get; internal set; }

    /// <summary>Distinct guest IDTs shadowed.</summary>
    public int ShadowIdts { get; internal set; }

    /// <summary>The first failure the dispatcher reported (also the machine's stop message), or null.</summary>
    public string? Failure { get; internal set; }

    public long BlocksTranslated => Volatile.Read(ref blocks);
    /// <summary>Native instructions translated (static count over all blocks).</summary>
    public long NativeInstructions => Volatile.Read(ref nativeInstructions);
    public long NativeBytes => Volatile.Read(ref nativeBytes);
    /// <summary>Bytes of translated blocks in the main pool (edge stubs not included).</summary>
    public long CacheBytes => Volatile.Read(ref cacheBytes);
    public long EdgeStubs => Volatile.Read(ref edgeStubs);
    public long EdgeStubBytes => EdgeStubs * (long)CodeCache.EdgeStubSize;
    /// <summary>Translated bytes per native byte (main pool only).</summary>
    public double ExpansionFactor => NativeBytes == 0 ? 0 : (double)CacheBytes / NativeBytes;
    public long ChainedEdges => Volatile.Read(ref chained);
    public long DispatcherEntries => Sum(0);
    public long IndirectDispatches => Sum(1);
    /// <summary>Entries through an edge that was already chained: a vCPU ran a decode of the branch from before its patch.</summary>
    public long StaleEdgeEntries => Sum(2);
    /// <summary>Dispatcher entries that ran a call-out (lidt, sidt, wrmsr/rdmsr of a shadowed MSR).</summary>
    public long CallOuts => Sum(3);
    /// <summary>DRK-style: interrupts and exceptions that entered the dispatcher through a gate stub (also counted in CallOuts).</summary>
    public long GateEntries => Sum(4);
    /// <summary>DRK-style: syscalls that entered the dispatcher through LSTAR.</summary>
    public long SyscallEntries => Sum(5);
    /// <summary>DRK-style: interrupt frames whose code-cache RIP became native, and how many of those were rolled back (pushes undone, saved flags restored, or rolled forward to a jumptable target).</summary>
    public long FramesToNative => Sum(6);
    public long FramesRolledBack => Sum(7);
    public long DispatcherEntriesOf(int vcpu) => Volatile.Read(ref perVcpu[vcpu * Stride]);

    private long Sum(int field)
    {
        long s = 0;
        for (int i = field; i < perVcpu.Length; i += Stride) s += Volatile.Read(ref perVcpu[i]);
        return s;
    }

    public override string ToString() =>
        $"dbt: blocks={BlocksTranslated} native-insns={NativeInstructions} native-bytes={NativeBytes} cache-bytes={CacheBytes} " +
        $"expansion={ExpansionFactor:F2} edge-stubs={EdgeStubs} chained={ChainedEdges} dispatcher-entries={DispatcherEntries} jumptable-misses={IndirectDispatches} call-outs={CallOuts} gate-entries={GateEntries} syscall-entries={SyscallEntries} frames-to-native={FramesToNative}/{FramesRolledBack} stale-edge-entries={StaleEdgeEntries} switchons={SwitchOns} switchoffs={SwitchOffs} flushes={Flushes} stack-words={StackWordsRewritten}/{StackWordsLeft} regs={RegistersRewritten}";
}
