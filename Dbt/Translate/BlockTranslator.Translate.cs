using Harness.Dbt.Cache;
using Harness.Dbt.Dispatch;
using Harness.Smp;
using Harness.Smp.Cpu;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>The translate loop: a request becomes a batch of blocks (an entry path, fixups), each translated rule by rule, laid out, linked and published together.</summary>
public sealed partial class BlockTranslator
{
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
                    catch (Exception x) when (x is not (UnsupportedInstructionException or TranslationException or CodeCacheFullException or GuestFault))
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

    /// <summary>Reads native code through the vCPU's page tables (an execute access), page by page.</summary>
    private sealed unsafe class NativeReader(Vcpu v, ulong va) : CodeReader
    {
        private ulong pageVa = ulong.MaxValue, pagePa;

        public override int ReadByte()
        {
            ulong pv = va & ~0xFFFUL;
            if (pv != pageVa)
            {
                try { pagePa = v.ToPhysical(pv, Access.Exec); }
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
