using Harness.Dbt.Cache;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>Layout and encoding: the emitted items of one block encoded at their cache address in one pass.</summary>
public sealed partial class BlockTranslator
{
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
        ulong at = Cache.Main.Peek(CodeCache.BlockAlign);
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

        ulong got = Cache.Main.Allocate((ulong)length, CodeCache.BlockAlign);
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
}
