using System.Collections.Concurrent;
using Harness.Dbt.Dispatch;
using Harness.Machine;
using Harness.Machine.Cpu;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>Translation of a native address failed (unreadable code, an unsupported instruction, an encoder error).</summary>
public sealed class TranslationException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>One translated block: native [NativeStart, NativeEnd) lives at [CacheStart, CacheStart + CacheLength).</summary>
public sealed record TranslatedBlock(ulong NativeStart, ulong NativeEnd, ulong CacheStart, int CacheLength, int NativeInstructions, int Edges)
{
    /// <summary>For an interrupt-entry translation (<see cref="EntryPath"/>): the slot offset from RSP at its start.</summary>
    public int? EntrySlotDelta { get; init; }

    /// <summary>Offsets of the block's return points (see Layout).</summary>
    public uint[] ReturnPoints { get; init; } = [];

    /// <summary>Recovery points (offset in the block, recovery), ascending: <see cref="Recovery"/>.</summary>
    public (uint Offset, Recovery Recovery)[] Points { get; init; } = [];
}

/// <summary>
/// Translates native code blocks into the main pool. A block is the straight-line native code from
/// an address up to an unconditional control transfer (jmp, ret, indirect jmp, iretq, ...); jcc and
/// call do not end it (their fall-through follows in the same block). Each native instruction is
/// translated by its <see cref="Rulebook"/> rule into an <see cref="Emitter"/> list, which Iced's
/// BlockEncoder encodes at the block's cache address in two passes (the second pads each patchable
/// rel32 to a 4-byte boundary).
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
    private readonly HashSet<(ulong, int)> entryInProgress = new();
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
    internal static Recovery? RecoverAt(TranslatedBlock[] blocksByStart, ulong pc)
    {
        if (BlockAt(blocksByStart, pc) is not { } b || pc - b.CacheStart >= (ulong)b.CacheLength) return null;
        uint off = (uint)(pc - b.CacheStart);
        foreach (var (o, r) in b.Points) if (o == off) return r;
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

    /// <summary>The block with the greatest CacheStart at or below pc, or null.</summary>
    private static TranslatedBlock? BlockAt(TranslatedBlock[] blocksByStart, ulong pc)
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
        lock (addLock) return GetOrTranslateLocked(v, native);
    }

    private ulong GetOrTranslateLocked(Vcpu v, ulong native)
    {
        if (map.TryGetValue(native, out ulong tx)) return tx;
        var b = TranslateLocked(v, native);
        blocks.Add(b);
        map[native] = b.CacheStart; // publish: only now can any vCPU reach the block
        return b.CacheStart;
    }

    /// <summary>The DBT's exception-table registrations (null: none).</summary>
    internal Kernel.ExceptionTables? ExceptionTables { get; set; }

    /// <summary>The entry-mode translation of native with the frame's redundant slot at RSP + slotDelta (see <see cref="EntryPath"/>).</summary>
    public ulong TranslateEntry(Vcpu v, ulong native, int slotDelta)
    {
        lock (addLock) return TranslateEntryLocked(v, native, slotDelta);
    }

    internal ulong TranslateEntryLocked(Vcpu v, ulong native, int slotDelta)
    {
        var key = (native, slotDelta);
        if (entryMap.TryGetValue(key, out ulong tx)) return tx;
        if (!entryInProgress.Add(key))
            throw new TranslationException($"the interrupt entry path loops back to 0x{native:x} before writing the frame's redundant slot");
        try
        {
            var b = TranslateLocked(v, native, slotDelta) with { EntrySlotDelta = slotDelta };
            blocks.Add(b);
            entryMap[key] = b.CacheStart;
            return b.CacheStart;
        }
        finally { entryInProgress.Remove(key); }
    }

    private TranslatedBlock TranslateLocked(Vcpu v, ulong native, int? slotDelta = null)
    {
        var reader = new NativeReader(v, native);
        var decoder = Decoder.Create(64, reader, native, DecoderOptions.None);
        var e = new Emitter(this, v, slotDelta);
        var faultable = new List<(int Item, ulong Fixup)>();
        // Item ranges per native instruction (and per trailing fall-through jmp), for the recovery points.
        var ranges = new List<(int Start, int End, Instruction Native)>();
        void FallThrough(ulong to)
        {
            int at = e.Items.Count;
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
                    if (decoder.LastError == DecoderError.NoMoreBytes)
                        throw new TranslationException($"cannot read native code at 0x{ip:x} (not mapped or outside RAM)");
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
            if (e.Items.Count > snippetStart) ranges.Add((snippetStart, e.Items.Count, ins));
            Flow flow;
            if (ExceptionTables is { } xt && xt.TryGetFixup(v, ins.IP, out ulong fixup))
                faultable.Add((e.Items.Count, fixup));
            int itemsBefore = e.Items.Count;
            try
            {
                var rule = Rulebook.For(ins, options);
                if (e.SlotDelta is not null && EntryPath.Step(e, infos)) flow = Flow.Continue;
                else
                {
                    bool entry = e.SlotDelta is not null;
                    flow = rule.Emit(e);
                    if (entry && flow == Flow.EndBlock && rule != Rulebook.DirectJmp)
                        throw new UnsupportedInstructionException(ins, $"the interrupt entry path ends with '{ins}' before writing the frame's redundant slot");
                }
                Clients?.After(e, rule, flow);
            }
            catch (UnsupportedInstructionException) when (n > 0 && e.SlotDelta is null)
            {
                e.Items.RemoveRange(itemsBefore, e.Items.Count - itemsBefore);
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
        block = block with { Points = points.ToArray() };
        // Register the copies of faultable instructions (identity rules: the copy is the rule's first item).
        foreach (var (item, fixup) in faultable)
            ExceptionTables!.Register(block.CacheStart + offsets[item], GetOrTranslateLocked(v, fixup));
        return block;
    }

    /// <summary>Encodes the emitted items at the next main-pool address, writes and records them.</summary>
    private TranslatedBlock Layout(Emitter e, ulong nativeStart, ulong nativeEnd, int nativeCount, out uint[] offsets)
    {
        var items = e.Items;
        ulong at = Cache.Main.Peek(CodeCache.CodeCache.BlockAlign);

        // Pass 1: sizes (patchable branches as unpadded placeholders; every other size is address-independent).
        var first = new List<Instruction>(items.Count);
        foreach (var it in items) first.Add(it.Ins);
        var (_, off1) = Encode(first, at);

        // Pass 2: pad every patchable branch so its rel32 is 4-byte aligned (one atomic store when chained).
        var second = new List<Instruction>(items.Count);
        var sites = new ulong[items.Count];
        ulong shift = 0;
        for (int i = 0; i < items.Count; i++)
        {
            var it = items[i];
            if (it.Opcode is null) { second.Add(it.Ins); continue; }
            ulong insAt = at + off1[i] + shift;
            int pad = (int)((4 - ((insAt + (ulong)it.Opcode.Length) & 3)) & 3);
            ulong site = insAt + (ulong)pad + (ulong)it.Opcode.Length;
            var bytes = new byte[pad + it.Opcode.Length + 4];
            bytes.AsSpan(0, pad).Fill(0x2E); // ignored segment prefix (branch hint): no extra executed instruction
            it.Opcode.CopyTo(bytes, pad);
            BitConverter.TryWriteBytes(bytes.AsSpan(pad + it.Opcode.Length), Rel32(site, it.Target));
            var db = Instruction.CreateDeclareByte(bytes);
            db.IP = it.Ins.IP;
            second.Add(db);
            sites[i] = site;
            shift += (ulong)pad;
        }
        var (code, off2) = Encode(second, at);
        for (int i = 0; i < items.Count; i++)
        {
            if (items[i].Opcode is null) continue;
            ulong end = at + (i + 1 < items.Count ? off2[i + 1] : (ulong)code.Length);
            if (end - 4 != sites[i] || (sites[i] & 3) != 0)
                throw new TranslationException($"layout of the block for 0x{nativeStart:x}: patch site 0x{sites[i]:x} moved or is unaligned (encoder sizes changed between passes)");
        }

        for (int i = 0; i < items.Count; i++)
        {
            if (items[i].PushAddressOfIp == 0) continue;
            int j = items.FindIndex(x => x.Ins.IP == items[i].PushAddressOfIp);
            ulong target = j < 0 ? throw new TranslationException($"layout of the block for 0x{nativeStart:x}: a continuation push has no continuation")
                : at + off2[j];
            int imm = unchecked((int)target);
            if ((ulong)(long)imm != target) throw new TranslationException($"continuation 0x{target:x} does not fit a sign-extended imm32");
            BitConverter.TryWriteBytes(code.AsSpan((int)off2[i] + 1), imm);
        }

        ulong got = Cache.Main.Allocate((ulong)code.Length, CodeCache.CodeCache.BlockAlign);
        if (got != at) throw new TranslationException("code cache allocation moved during layout");
        Cache.Write(at, code);
        int edges = 0;
        for (int i = 0; i < items.Count; i++)
            if (items[i].Edge is { } edge) { edge.PatchSite = sites[i]; edges++; }

        // Return points: where a translated call's pushed return address points (the item after a
        // rel32 call, the target of a continuation push). Only these may be taken for return addresses
        // on a kernel stack at switchoff; any other cache-range word there is stale data.
        var returns = new List<uint>();
        for (int i = 0; i < items.Count; i++)
        {
            if (items[i].Opcode is [0xE8]) returns.Add(i + 1 < items.Count ? off2[i + 1] : (uint)code.Length);
            if (items[i].PushAddressOfIp != 0)
            {
                int j = items.FindIndex(x => x.Ins.IP == items[i].PushAddressOfIp);
                if (j >= 0) returns.Add(off2[j]);
            }
        }
        offsets = off2;
        stats.AddBlock(nativeCount, (long)(nativeEnd - nativeStart), code.Length, edges);
        return new TranslatedBlock(nativeStart, nativeEnd, at, code.Length, nativeCount, edges) { ReturnPoints = returns.ToArray() };
    }

    internal static int Rel32(ulong site, ulong target)
    {
        long d = unchecked((long)(target - (site + 4)));
        return d is >= int.MinValue and <= int.MaxValue ? (int)d
            : throw new TranslationException($"branch at 0x{site:x} cannot reach 0x{target:x} with a rel32");
    }

    private static (byte[] Code, uint[] Offsets) Encode(List<Instruction> list, ulong at)
    {
        var w = new ByteWriter();
        if (!BlockEncoder.TryEncode(64, new InstructionBlock(w, list, at), out string? err, out var result,
                BlockEncoderOptions.DontFixBranches | BlockEncoderOptions.ReturnNewInstructionOffsets))
            throw new TranslationException($"encoding a block at 0x{at:x} failed: {err}");
        return (w.Bytes.ToArray(), result.NewInstructionOffsets);
    }

    private sealed class ByteWriter : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
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
