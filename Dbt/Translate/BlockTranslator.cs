using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Harness.Dbt.Dispatch;
using Harness.Machine;
using Harness.Machine.Cpu;
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
/// </summary>
public sealed class BlockTranslator
{
    public readonly CodeCache.CodeCache Cache;
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

    /// <summary>The DBT's kernel-facing state (shadow IDT, LSTAR, per-CPU area), for the rules' call-outs.</summary>
    internal Kernel.KernelEntries Kernel { get; set; } = null!;

    /// <summary>The attached clients (null: none); their hooks run as blocks are translated.</summary>
    internal Clients.ClientSet? Clients { get; set; }

    /// <summary>switchon/switchoff, for the hypercall rule.</summary>
    internal Kernel.Switch Switch { get; set; } = null!;

    internal BlockTranslator(CodeCache.CodeCache cache, EdgeTable edges, DbtOptions options, DbtStats stats)
    {
        Cache = cache;
        Edges = edges;
        this.options = options;
        this.stats = stats;
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
    internal Harness.Machine.CodeOrigin? OriginOf(ulong pc)
    {
        if (!Cache.Contains(pc)) return null;
        if (BlockAt(SortedBlocks(), pc) is not { } b || pc - b.CacheStart >= (ulong)b.CacheLength)
            return Edges.Lookup(pc & ~(CodeCache.CodeCache.EdgeStubSize - 1)) is { } edge
                ? new Harness.Machine.CodeOrigin(edge.Resume, edge.Kind == EdgeKind.CallOut ? $"call-out stub ({edge.What})" : $"edge stub ({edge.Kind})")
                : null;
        uint off = (uint)(pc - b.CacheStart);
        (uint Offset, ulong Native, string Rule)? best = null;
        foreach (var x in b.Sources) if (x.Offset <= off) best = x;
        return best is { } s ? new Harness.Machine.CodeOrigin(s.Native, s.Rule) : null;
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

    /// <summary>The DBT's exception-table registrations (null: none).</summary>
    internal Kernel.ExceptionTables? ExceptionTables { get; set; }

    /// <summary>The entry-mode translation of native with the frame's redundant slot at RSP + slotDelta (see <see cref="EntryPath"/>).</summary>
    public ulong TranslateEntry(Vcpu v, ulong native, int slotDelta)
    {
        lock (addLock) return TranslateBatch(v, native, slotDelta);
    }

    /// <summary>
    /// Blocks one translation request may add before every one of them is published: the block asked
    /// for, the entry-mode path behind an interrupt gate (each direct branch on it translated
    /// eagerly), and the translations of fixups of faultable instructions. The kernel's gate paths are
    /// 2-3 blocks and its fixups one; the bound stops a walk into data or zeroed memory (256
    /// instructions a block) with a message instead of running through all of RAM.
    /// </summary>
    internal const int MaxBatchBlocks = 64;

    /// <summary>An entry-mode branch to another block of the same walk: its rel32 is written once that block is laid out.</summary>
    internal sealed class EntryLink((ulong Native, int SlotDelta) key)
    {
        public readonly (ulong Native, int SlotDelta) Key = key;
        public ulong PatchSite;
    }

    /// <summary>
    /// The blocks of one request, laid out (at their final cache addresses) but not yet reachable: a
    /// worklist instead of recursion, because the blocks a request needs are chosen by guest code (a
    /// handler that falls through into zeroed memory once overflowed the host stack).
    /// </summary>
    private sealed class Batch
    {
        public readonly Queue<(ulong Native, int? SlotDelta)> Todo = new();
        public readonly List<(TranslatedBlock Block, int? SlotDelta, List<EntryLink>? Links)> Done = new();
        public readonly Dictionary<ulong, ulong> Normal = new();
        public readonly Dictionary<(ulong, int), ulong> Entry = new();
        public readonly List<(ulong Copy, ulong FixupNative)> Fixups = new();
        /// <summary>The entry links of the block being translated (null: none, the common case).</summary>
        public List<EntryLink>? Links;
        public int NativeInstructions;
        public bool HasEntryBlocks;

        public void Clear()
        {
            Todo.Clear(); Done.Clear(); Normal.Clear(); Entry.Clear(); Fixups.Clear();
            Links = null;
            NativeInstructions = 0;
            HasEntryBlocks = false;
        }
    }

    // The request being translated, and a cleared one kept for the next (one per translator: requests
    // are serialized by addLock, and a kernel run makes tens of thousands).
    private Batch? batch, spare;

    /// <summary>Under addLock: an entry-mode branch target of the block being translated, patched when the batch ends.</summary>
    internal EntryLink EntryTarget(ulong native, int slotDelta)
    {
        var link = new EntryLink((native, slotDelta));
        (batch!.Links ??= new()).Add(link);
        batch.Todo.Enqueue((native, slotDelta));
        return link;
    }

    private bool Translated(ulong native, int? slotDelta) => slotDelta is int d
        ? entryMap.ContainsKey((native, d)) || batch!.Entry.ContainsKey((native, d))
        : map.ContainsKey(native) || batch!.Normal.ContainsKey(native);

    private ulong TranslateBatch(Vcpu v, ulong native, int? slotDelta)
    {
        if (slotDelta is null && map.TryGetValue(native, out ulong found)) return found;
        if (slotDelta is int d0 && entryMap.TryGetValue((native, d0), out found)) return found;
        if (batch is not null) throw new InvalidOperationException("a translation request inside another (the translator's batch is not reentrant)");
        var b = batch = spare ?? new Batch();
        spare = null;
        try
        {
            b.Todo.Enqueue((native, slotDelta));
            while (b.Todo.TryDequeue(out var next))
            {
                if (Translated(next.Native, next.SlotDelta)) continue;
                if (b.Done.Count == MaxBatchBlocks)
                    throw new TranslationException(slotDelta is null
                        ? $"translating 0x{native:x} needs more than {MaxBatchBlocks} blocks at once (fixup targets); stopped at 0x{next.Native:x}"
                        : $"the interrupt entry path does not write the frame's redundant slot within {MaxBatchBlocks} blocks " +
                          $"({b.NativeInstructions} native instructions); the walk stopped at 0x{next.Native:x}");
                b.Links = null;
                TranslatedBlock block;
                // Only the block asked for may be unreadable (the dispatcher then runs it natively);
                // a gate's path or a fixup that cannot be read cannot be translated.
                try { block = TranslateLocked(v, next.Native, next.SlotDelta); }
                catch (UnreadableCodeException u) when (b.Done.Count > 0 || slotDelta is not null) { throw new TranslationException(u.Message, u); }
                if (next.SlotDelta is int d) { block = block with { EntrySlotDelta = d }; b.Entry[(next.Native, d)] = block.CacheStart; b.HasEntryBlocks = true; }
                else b.Normal[next.Native] = block.CacheStart;
                b.Done.Add((block, next.SlotDelta, b.Links));
                b.NativeInstructions += block.NativeInstructions;
            }
            if (b.HasEntryBlocks) RejectEntryLoops(b);
            foreach (var (block, _, links) in b.Done)
                foreach (var link in links ?? [])
                {
                    ulong target = b.Entry.TryGetValue(link.Key, out ulong t) ? t : entryMap[link.Key];
                    Edges.Patch(link.PatchSite, target);
                }
            // Registered before any block is published: a copy must find its fixup from its first run.
            foreach (var (copy, fixup) in b.Fixups)
                ExceptionTables!.Register(copy, b.Normal.TryGetValue(fixup, out ulong t) ? t : map[fixup]);
            foreach (var (block, d, _) in b.Done)
            {
                blocks.Add(block);
                if (d is int delta) entryMap[(block.NativeStart, delta)] = block.CacheStart;
                else map[block.NativeStart] = block.CacheStart; // publish: only now can any vCPU reach the block
            }
            return b.Done[0].Block.CacheStart;
        }
        finally
        {
            b.Clear();
            batch = null;
            spare = b;
        }
    }

    /// <summary>
    /// An entry path that branches back to a block of itself before writing the slot: refused, as a
    /// path the tracker cannot prove ends (iterative DFS over the batch's entry links).
    /// </summary>
    private static void RejectEntryLoops(Batch b)
    {
        var links = new Dictionary<(ulong, int), List<EntryLink>>();
        foreach (var (block, d, l) in b.Done) if (d is int delta) links[(block.NativeStart, delta)] = l ?? [];
        var state = new Dictionary<(ulong, int), int>(); // 1: on the DFS path, 2: finished
        foreach (var root in links.Keys)
        {
            if (state.ContainsKey(root)) continue;
            var stack = new Stack<((ulong, int) Node, int Next)>();
            stack.Push((root, 0));
            state[root] = 1;
            while (stack.Count > 0)
            {
                var (node, next) = stack.Pop();
                var outs = links[node];
                if (next == outs.Count) { state[node] = 2; continue; }
                stack.Push((node, next + 1));
                var to = outs[next].Key;
                if (!links.ContainsKey(to)) continue; // an earlier walk's block: finished
                if (state.TryGetValue(to, out int s))
                {
                    if (s == 1) throw new TranslationException($"the interrupt entry path loops back to 0x{to.Item1:x} before writing the frame's redundant slot");
                    continue;
                }
                state[to] = 1;
                stack.Push((to, 0));
            }
        }
    }

    private TranslatedBlock TranslateLocked(Vcpu v, ulong native, int? slotDelta = null)
    {
        var reader = new NativeReader(v, native);
        var decoder = Decoder.Create(64, reader, native, DecoderOptions.None);
        var e = new Emitter(this, v, slotDelta, itemScratch);
        var faultable = new List<(int Item, ulong Fixup)>();
        // Item ranges per native instruction (and per trailing fall-through jmp), for the recovery points.
        var ranges = new List<(int Start, int End, Instruction Native)>();
        var sources = sourceScratch;
        sources.Clear();
        void FallThrough(ulong to)
        {
            int at = e.Items.Count;
            sources.Add((at, to, "fall-through jmp"));
            e.BranchToNative(Emitter.Jmp, to, EdgeKind.FallThrough);
            var at_ = Instruction.Create(Code.Nopd);
            at_.IP = to;
            ranges.Add((at, e.Items.Count, at_));
        }
        int n = 0;
        ulong ip = native;
        while (true)
        {
            decoder.Decode(out var ins);
            if (ins.IsInvalid)
            {
                if (n == 0)
                {
                    if (decoder.LastError == DecoderError.NoMoreBytes) throw new UnreadableCodeException(ip);
                    sources.Add((e.Items.Count, ip, "invalid bytes (#UD as natively)"));
                    e.Add(Instruction.Create(Code.Ud2)); // invalid bytes: #UD, as natively
                    n++;
                    break;
                }
                FallThrough(ip); // translated (and failing) only if ever reached
                break;
            }
            e.Native = ins;
            int snippetStart = e.Items.Count;
            Clients?.Before(e);
            // A client's snippet before the instruction is a sequence of its own (pushfq; cli; ...):
            // its recovery points lead back to the native instruction like a rule's.
            if (e.Items.Count > snippetStart) { ranges.Add((snippetStart, e.Items.Count, ins)); sources.Add((snippetStart, ins.IP, "client snippet")); }
            Flow flow;
            if (ExceptionTables is { } xt && xt.TryGetFixup(v, ins.IP, out ulong fixup)
                && !(options.PlantedFixupNotRegisteredForLoads && ins.Mnemonic == Mnemonic.Mov && ins.Op1Kind == OpKind.Memory))
                faultable.Add((e.Items.Count, fixup));
            int itemsBefore = e.Items.Count;
            try
            {
                var rule = Rulebook.For(ins, options);
                sources.Add((itemsBefore, ins.IP, rule.Name));
                if (e.SlotDelta is not null && EntryPath.Step(e, infos)) { flow = Flow.Continue; sources[^1] = (itemsBefore, ins.IP, "entry-path save of tx-nextpc"); }
                else
                {
                    bool entry = e.SlotDelta is not null;
                    try { flow = rule.Emit(e); }
                    catch (Exception x) when (x is not (UnsupportedInstructionException or TranslationException or CodeCache.CodeCacheFullException or GuestFault))
                    {
                        // A rule's own bug (a user's rule from --rules, or ours): name the rule and the
                        // instruction; the machine reports it as a host exception, with its stack.
                        throw new RuleFailedException(rule.Name, ins, x);
                    }
                    if (entry && flow == Flow.EndBlock && rule != Rulebook.DirectJmp)
                        throw new UnsupportedInstructionException(ins, $"the interrupt entry path ends with '{ins}' before writing the frame's redundant slot");
                }
                Clients?.After(e, rule, flow);
            }
            catch (UnsupportedInstructionException) when (n > 0 && e.SlotDelta is null)
            {
                e.Items.RemoveRange(itemsBefore, e.Items.Count - itemsBefore);
                if (sources.Count > 0 && sources[^1].Item == itemsBefore && sources[^1].Native == ins.IP) sources.RemoveAt(sources.Count - 1);
                FallThrough(ip);
                break;
            }
            catch (UnsupportedInstructionException u) { throw new TranslationException(u.Message, u); }
            ranges.Add((itemsBefore, e.Items.Count, ins));
            n++;
            ip = ins.NextIP;
            if (flow == Flow.EndBlock) break;
            if (n >= options.MaxBlockInstructions)
            {
                FallThrough(ip);
                break;
            }
        }
        Clients?.End(e);
        var block = Layout(e, native, ip, n, out var offsets);
        var perItem = new Recovery?[e.Items.Count];
        foreach (var (start, end, ins) in ranges) RecoveryPoints.Compute(e.Items, start, end, ins, perItem);
        var points = new List<(uint, Recovery)>();
        for (int i = 0; i < perItem.Length; i++) if (perItem[i] is { } r) points.Add((offsets[i], r));
        var sourceOffsets = new (uint, ulong, string)[sources.Count];
        for (int i = 0; i < sourceOffsets.Length; i++)
            sourceOffsets[i] = (sources[i].Item < offsets.Length ? offsets[sources[i].Item] : (uint)block.CacheLength, sources[i].Native, sources[i].Rule);
        block = block with { Points = points.ToArray(), Sources = sourceOffsets };
        // The copies of faultable instructions (identity rules: the copy is the rule's first item),
        // registered with their fixups' translations when the batch ends.
        foreach (var (item, fixup) in faultable)
        {
            batch!.Fixups.Add((block.CacheStart + offsets[item], fixup));
            batch.Todo.Enqueue((fixup, null));
        }
        return block;
    }

    // The emitted items of the block being translated (only under addLock; a fresh list per block
    // was most of what a short translated run allocated).
    private readonly List<Emitter.Item> itemScratch = new(256);

    // Where each native instruction's items start, for TranslatedBlock.Sources (only under addLock: blocks are translated one at a time).
    private readonly List<(int Item, ulong Native, string Rule)> sourceScratch = new();

    // The layout's encoder and buffer, reused from block to block (only under addLock).
    private readonly BlockBuffer buffer = new();
    private Encoder? encoder;

    /// <summary>
    /// Encodes the emitted items at the next main-pool address, writes and records them. One pass in
    /// order with Iced's Encoder: every item's size is independent of its address (the rules choose
    /// rel8 or rel32 forms themselves, and a RIP-relative operand always has a disp32), so each item
    /// is encoded where it ends up; a branch to a label not placed yet is encoded with a stand-in
    /// target of the same form and re-encoded in place once the labels are known. Iced's
    /// BlockEncoder would do the same in two full passes with an object per instruction, which was
    /// most of the translation time.
    /// </summary>
    private TranslatedBlock Layout(Emitter e, ulong nativeStart, ulong nativeEnd, int nativeCount, out uint[] offsets)
    {
        var items = CollectionsMarshal.AsSpan(e.Items);
        ulong at = Cache.Main.Peek(CodeCache.CodeCache.BlockAlign);
        var w = buffer;
        w.Reset();
        var enc = encoder ??= Encoder.Create(64, w);
        var offs = new uint[items.Length];
        offsets = offs;
        var sites = new ulong[items.Length];
        List<int>? forward = null;
        for (int i = 0; i < items.Length; i++)
        {
            ref var it = ref items[i];
            ulong pc = at + (ulong)w.Position;
            offs[i] = (uint)w.Position;
            if (it.Opcode is { } op)
            {
                // Patchable: rel32 4-byte aligned (one atomic store when chained), padded with ignored
                // 2E prefixes (a branch hint), so the padding costs no executed instruction.
                int pad = (int)((4 - ((pc + (ulong)op.Length) & 3)) & 3);
                for (int k = 0; k < pad; k++) w.WriteByte(0x2E);
                foreach (byte b in op) w.WriteByte(b);
                sites[i] = pc + (ulong)pad + (ulong)op.Length;
                w.WriteInt32(it.Entry is null ? EdgeTable.Rel32(sites[i], it.Target) : 0); // an entry link is written when its batch ends
            }
            else if (it.Ins.Code == Code.DeclareByte)
            {
                for (int k = 0; k < it.Ins.DeclareDataCount; k++) w.WriteByte(it.Ins.GetDeclareByteValue(k));
            }
            else if (LabelIndex(it.Ins, items.Length) >= 0)
            {
                (forward ??= new()).Add(i);
                var standIn = it.Ins;
                standIn.NearBranch64 = pc; // in range of either form; the size depends only on the Code
                EncodeAt(enc, standIn, pc, nativeStart);
            }
            else EncodeAt(enc, it.Ins, pc, nativeStart);
        }
        int length = w.Position;

        if (forward is not null)
            foreach (int i in forward)
            {
                var ins = items[i].Ins;
                ins.NearBranch64 = LabelAddress(at, offs, length, LabelIndex(ins, items.Length));
                w.Position = (int)offs[i];
                EncodeAt(enc, ins, at + offs[i], nativeStart);
                int end = i + 1 < items.Length ? (int)offs[i + 1] : length;
                if (w.Position != end)
                    throw new TranslationException($"layout of the block for 0x{nativeStart:x}: '{ins}' changed size when its label was bound");
            }
        w.Position = length;

        var returns = new List<uint>();
        for (int i = 0; i < items.Length; i++)
        {
            // Return points: where a translated call's pushed return address points (the item after a
            // rel32 call, the target of a continuation push). Only these may be taken for return
            // addresses on a kernel stack at switchoff; any other cache-range word there is stale data.
            if (items[i].Opcode is [0xE8]) returns.Add(i + 1 < items.Length ? offs[i + 1] : (uint)length);
            if (items[i].PushAddressOfIp == 0) continue;
            int j = (int)(items[i].PushAddressOfIp / Emitter.IpStep) - 1;
            if (items[i].PushAddressOfIp % Emitter.IpStep != 0 || j < 0 || j > items.Length)
                throw new TranslationException($"layout of the block for 0x{nativeStart:x}: a continuation push has no continuation");
            ulong target = LabelAddress(at, offs, length, j);
            int imm = unchecked((int)target);
            if ((ulong)(long)imm != target) throw new TranslationException($"continuation 0x{target:x} does not fit a sign-extended imm32");
            w.Patch32((int)offs[i] + 1, imm);
            returns.Add((uint)(target - at));
        }

        ulong got = Cache.Main.Allocate((ulong)length, CodeCache.CodeCache.BlockAlign);
        if (got != at) throw new TranslationException("code cache allocation moved during layout");
        Cache.Write(at, w.Written);
        int edges = 0;
        for (int i = 0; i < items.Length; i++)
        {
            if (items[i].Edge is { } edge) { edge.PatchSite = sites[i]; edges++; }
            if (items[i].Entry is { } link) link.PatchSite = sites[i];
        }
        stats.AddBlock(nativeCount, (long)(nativeEnd - nativeStart), length, edges);
        return new TranslatedBlock(nativeStart, nativeEnd, at, length, nativeCount, edges) { ReturnPoints = returns.ToArray() };
    }

    private static ulong LabelAddress(ulong at, uint[] offsets, int length, int index) => at + (index < offsets.Length ? offsets[index] : (uint)length);

    /// <summary>The item a branch inside the block targets (its synthetic IP, see <see cref="Emitter"/>; the count for the block's end), or -1 for an absolute target.</summary>
    private static int LabelIndex(in Instruction ins, int count)
    {
        if (ins.Op0Kind != OpKind.NearBranch64) return -1;
        ulong t = ins.NearBranch64;
        if (t == 0 || t % Emitter.IpStep != 0 || t / Emitter.IpStep > (ulong)count + 1) return -1;
        return (int)(t / Emitter.IpStep) - 1;
    }

    private static void EncodeAt(Encoder enc, in Instruction ins, ulong pc, ulong nativeStart)
    {
        if (!enc.TryEncode(ins, pc, out _, out string? err))
            throw new TranslationException($"encoding '{ins}' at 0x{pc:x} (block for 0x{nativeStart:x}) failed: {err}");
    }

    /// <summary>A growable byte buffer the encoder writes to, with a position that can move back to re-encode an item in place.</summary>
    private sealed class BlockBuffer : CodeWriter
    {
        private byte[] bytes = new byte[4096];
        public int Position;
        private int length;

        public void Reset() => Position = length = 0;
        public ReadOnlySpan<byte> Written => bytes.AsSpan(0, length);

        public override void WriteByte(byte value)
        {
            if (Position == bytes.Length) Array.Resize(ref bytes, bytes.Length * 2);
            bytes[Position++] = value;
            if (Position > length) length = Position;
        }

        public void WriteInt32(int value)
        {
            for (int k = 0; k < 4; k++) WriteByte((byte)(value >> (8 * k)));
        }

        public void Patch32(int at, int value) => BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at, 4), value);
    }

    /// <summary>Reads native code through the vCPU's page tables (an execute access), page by page.</summary>
    private sealed unsafe class NativeReader(Vcpu v, ulong va) : CodeReader
    {
        private ulong pageVa = ulong.MaxValue, pagePa;

        public override int ReadByte()
        {
            ulong pv = va & ~0xFFFUL;
            if (pv != pageVa)
            {
                try { pagePa = v.Translate(pv, Access.Exec); }
                catch (GuestFault) { return -1; }
                pageVa = pv;
            }
            ulong pa = pagePa + (va & 0xFFF);
            if (!v.Mem.InRam(pa)) return -1;
            va++;
            return v.Mem.Base[pa];
        }
    }
}
