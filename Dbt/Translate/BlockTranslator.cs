using Harness.Dbt.Cache;
using System.Collections.Concurrent;
using Harness.Dbt.Dispatch;
using Harness.Smp;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>Translation of a native address failed (unreadable code, an unsupported instruction, an encoder error).</summary>
public class TranslationException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The native code at an address cannot be read (not mapped, or outside RAM). The dispatcher leaves
/// to native code there, so the guest sees the fetch fault native execution raises
/// (<see cref="Dispatch.Dispatcher"/>); anywhere else it is a TranslationException.
/// </summary>
public sealed class UnreadableCodeException(ulong address) : TranslationException($"cannot read native code at 0x{address:x} (not mapped or outside RAM)")
{
    public ulong Address { get; } = address;
}

/// <summary>A rule threw something other than the translator's own exceptions: a bug in the rule, reported with its name.</summary>
public sealed class RuleFailedException(string rule, Instruction ins, Exception inner)
    : Exception($"rule '{rule}' threw {inner.GetType().Name} translating '{ins}' at 0x{ins.IP:x}: {inner.Message}", inner);

/// <summary>One translated block: native [NativeStart, NativeEnd) lives at [CacheStart, CacheStart + CacheLength).</summary>
public sealed record TranslatedBlock(ulong NativeStart, ulong NativeEnd, ulong CacheStart, int CacheLength, int NativeInstructions, int Edges)
{
    /// <summary>For an interrupt-entry translation (<see cref="EntryPath"/>): the slot offset from RSP at its start.</summary>
    public int? EntrySlotDelta { get; init; }

    /// <summary>Offsets of the block's return points (see Layout).</summary>
    public uint[] ReturnPoints { get; init; } = [];

    /// <summary>Recovery points (offset in the block, recovery), ascending: <see cref="Recovery"/>.</summary>
    public (uint Offset, Recovery Recovery)[] Points { get; init; } = [];

    /// <summary>Where each native instruction's translation starts (offset, native RIP, the rule that emitted it), ascending: for reports.</summary>
    public (uint Offset, ulong Native, string Rule)[] Sources { get; init; } = [];
}

/// <summary>
/// Translates native code blocks into the main pool. A block is the straight-line native code from
/// an address up to an unconditional control transfer (jmp, ret, indirect jmp, iretq, ...); jcc and
/// call do not end it (their fall-through follows in the same block). Each native instruction is
/// translated by its <see cref="Rulebook"/> rule into an <see cref="Emitter"/> list, which Layout
/// encodes at the block's cache address in one pass (padding each patchable rel32 to a 4-byte boundary).
///
/// Concurrency: the native-to-cache map is a ConcurrentDictionary read without locks; adding a block
/// (allocation, encoding, writing, publishing) is the one thing serialized across vCPUs, by
/// <see cref="addLock"/>, which is never held while guest code runs.
///
/// Three files: this one, the block directory (the native-to-cache map, blocks by address, recovery
/// points and origins of cache addresses) and the entry points; BlockTranslator.Translate.cs, the
/// translate loop; BlockTranslator.Layout.cs, layout and encoding.
/// </summary>
public sealed partial class BlockTranslator
{
    public readonly CodeCache Cache;
    public readonly EdgeTable Edges;
    private readonly DbtOptions options;
    private readonly DbtStats stats;
    private readonly ConcurrentDictionary<ulong, ulong> map = new();
    private readonly object addLock = new();
    private readonly List<TranslatedBlock> blocks = new();
    // Entry-mode translations, keyed by (native address, slot offset from RSP); only under addLock.
    private readonly Dictionary<(ulong, int), ulong> entryMap = new();
    private readonly InstructionInfoFactory infos = new();

    internal DbtOptions Options => options;

    /// <summary>What the rules' call-outs (and the DRK-style gate stubs) run.</summary>
    internal readonly ICallOutTargets CallOuts;

    /// <summary>The attached clients (null: none); their hooks run as blocks are translated.</summary>
    internal readonly Clients.ClientSet? Clients;

    /// <summary>The DBT's exception-table registrations (null: none).</summary>
    internal readonly Kernel.ExceptionTables? ExceptionTables;

    internal BlockTranslator(CodeCache cache, EdgeTable edges, DbtOptions options, DbtStats stats,
        ICallOutTargets callOuts, Clients.ClientSet? clients, Kernel.ExceptionTables? exceptionTables)
    {
        Cache = cache;
        Edges = edges;
        this.options = options;
        this.stats = stats;
        CallOuts = callOuts;
        Clients = clients;
        ExceptionTables = exceptionTables;
    }

    public bool TryLookup(ulong native, out ulong tx) => map.TryGetValue(native, out tx);

    /// <summary>Forgets every translation (cache wipe: no vCPU may execute or return into the cache).</summary>
    internal void Reset()
    {
        lock (addLock)
        {
            map.Clear();
            entryMap.Clear();
            blocks.Clear();
            sorted = null;
            Cache.Main.Reset();
            Cache.Edges.Reset();
            Edges.Clear();
        }
    }

    /// <summary>
    /// The recovery of a vCPU state at cache address pc (an instruction boundary inside a block), or
    /// null. blocksByStart: the blocks sorted by CacheStart (a snapshot taken while the world is stopped).
    /// </summary>
    /// <param name="plantedOffByOne">Planted bug (DbtOptions.PlantedRecoveryOffByOne): the next point's recovery.</param>
    internal static Recovery? RecoverAt(TranslatedBlock[] blocksByStart, ulong pc, bool plantedOffByOne = false)
    {
        if (BlockAt(blocksByStart, pc) is not { } b || pc - b.CacheStart >= (ulong)b.CacheLength) return null;
        uint off = (uint)(pc - b.CacheStart);
        for (int i = 0; i < b.Points.Length; i++)
            if (b.Points[i].Offset == off) return plantedOffByOne && i + 1 < b.Points.Length ? b.Points[i + 1].Recovery : b.Points[i].Recovery;
        return null;
    }

    private TranslatedBlock[]? sorted;
    private int sortedCount = -1;

    /// <summary>The translated blocks sorted by cache address (cached until the next block is added).</summary>
    internal TranslatedBlock[] SortedBlocks()
    {
        lock (addLock)
        {
            if (sorted is null || sortedCount != blocks.Count)
            {
                sorted = blocks.OrderBy(b => b.CacheStart).ToArray();
                sortedCount = blocks.Count;
            }
            return sorted;
        }
    }

    /// <summary>True if pc is a return point of a translated call (see TranslatedBlock.ReturnPoints).</summary>
    internal static bool IsReturnPoint(TranslatedBlock[] blocksByStart, ulong pc)
    {
        if (BlockAt(blocksByStart, pc) is not { } b) return false;
        ulong off = pc - b.CacheStart;
        return off <= (ulong)b.CacheLength && Array.IndexOf(b.ReturnPoints, (uint)off) >= 0;
    }

    /// <summary>For reports: the native instruction (and rule) whose translation holds cache address pc, or null.</summary>
    internal Harness.Smp.CodeOrigin? OriginOf(ulong pc)
    {
        if (!Cache.Contains(pc)) return null;
        if (BlockAt(SortedBlocks(), pc) is not { } b || pc - b.CacheStart >= (ulong)b.CacheLength)
            return Edges.Lookup(pc & ~(CodeCache.EdgeStubSize - 1)) is { } edge
                ? new Harness.Smp.CodeOrigin(edge.Resume, edge.Kind == EdgeKind.CallOut ? $"call-out stub ({edge.What})" : $"edge stub ({edge.Kind})")
                : null;
        uint off = (uint)(pc - b.CacheStart);
        (uint Offset, ulong Native, string Rule)? best = null;
        foreach (var x in b.Sources) if (x.Offset <= off) best = x;
        return best is { } s ? new Harness.Smp.CodeOrigin(s.Native, s.Rule) : null;
    }

    /// <summary>The block with the greatest CacheStart at or below pc, or null.</summary>
    internal static TranslatedBlock? BlockAt(TranslatedBlock[] blocksByStart, ulong pc)
    {
        int lo = 0, hi = blocksByStart.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (blocksByStart[mid].CacheStart <= pc) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found < 0 ? null : blocksByStart[found];
    }

    /// <summary>A snapshot of the translated blocks, in translation order.</summary>
    public IReadOnlyList<TranslatedBlock> Blocks { get { lock (addLock) return blocks.ToArray(); } }

    /// <summary>The translation of native (translating it now if needed); v supplies the page tables for reading native code.</summary>
    public ulong GetOrTranslate(Vcpu v, ulong native)
    {
        if (map.TryGetValue(native, out ulong tx)) return tx;
        lock (addLock) return TranslateBatch(v, native, slotDelta: null);
    }

    /// <summary>
    /// A dispatcher stub that no translated code branches to (a DRK-style IDT gate): the dispatcher
    /// runs effect, then leaves directly to the translation of native.
    /// </summary>
    internal ulong DispatcherStub(ulong native, CallOut effect, string what)
    {
        lock (addLock) return Edges.Create(native, EdgeKind.CallOut, effect, what, resume: native, exitsDirectly: true).Stub;
    }

    /// <summary>The entry-mode translation of native with the frame's redundant slot at RSP + slotDelta (see <see cref="EntryPath"/>).</summary>
    public ulong TranslateEntry(Vcpu v, ulong native, int slotDelta)
    {
        lock (addLock) return TranslateBatch(v, native, slotDelta);
    }
}
