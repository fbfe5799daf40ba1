using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using Iced.Intel;

namespace Harness.Smp.Decode;

/// <summary>
/// Decodes guest code into blocks, once per physical address (Iced does the decoding). A block
/// ends at a control transfer, an instruction that changes mode or interrupt state, a page end,
/// or <see cref="MaxInsns"/>. Blocks are shared by all vCPUs through the page's <see cref="CodePage"/>.
/// </summary>
internal sealed unsafe class BlockBuilder
{
    public const int MaxInsns = 48;
    private readonly Vcpu cpu;
    private readonly PhysicalMemory mem;
    private readonly ByteReader reader = new();
    private readonly Decoder decoder;
    private readonly Insn[] scratch = new Insn[MaxInsns];

    public BlockBuilder(Vcpu cpu)
    {
        this.cpu = cpu;
        mem = cpu.Mem;
        decoder = Decoder.Create(64, reader, 0, DecoderOptions.None);
    }

    private sealed class ByteReader : CodeReader
    {
        public readonly byte[] Buf = new byte[16];
        public int Pos, Len;
        public override int ReadByte() => Pos < Len ? Buf[Pos++] : -1;
    }

    public Block GetOrBuild(ulong rip, ulong pa)
    {
        if (!mem.InRam(pa)) throw GuestFault.Ud(); // fetching outside RAM reads all ones: not an instruction
        var page = mem.GetOrCreateCodePage(pa >> PhysicalMemory.PageShift);
        // Read before the bytes (acquire): a host write that retired blocks after our read of them bumps it.
        int generation = Volatile.Read(ref page.WriteGeneration);
        int off = (int)(pa & 0xFFF);
        var existing = page.BlockAt(off);
        // A block holds absolute addresses (RIP, branch targets, RIP-relative operands), so it is only
        // reused at the virtual address it was decoded for: code aliased at two addresses gets one per alias.
        if (existing is not null && existing.Valid && existing.Insns[0].Ip == rip) return existing;

        int count = 0;
        ulong ip = rip, ipa = pa;
        CodePage? page2 = null;
        while (count < MaxInsns)
        {
            int avail = (int)(0x1000 - (ipa & 0xFFF));
            int n = Math.Min(15, avail);
            new ReadOnlySpan<byte>(mem.Base + ipa, n).CopyTo(reader.Buf);
            GuestFault? nextPageFault = null;
            ulong pa2 = 0;
            if (n < 15)
            {
                try
                {
                    pa2 = cpu.TranslateFetch((ip | 0xFFF) + 1);
                    if (mem.InRam(pa2, (ulong)(15 - n))) new ReadOnlySpan<byte>(mem.Base + pa2, 15 - n).CopyTo(reader.Buf.AsSpan(n));
                    n = 15;
                }
                catch (GuestFault f) { nextPageFault = f; }
            }
            reader.Pos = 0;
            reader.Len = n;
            decoder.IP = ip;
            decoder.Decode(out var ins);
            if (ins.Code == Code.INVALID && decoder.LastError == DecoderError.NoMoreBytes)
            {
                // The instruction runs into a page we cannot fetch: fault if it is the first one, else stop before it.
                if (count == 0) throw nextPageFault ?? GuestFault.Ud();
                break;
            }
            var kind = OpTable.Build(ref scratch[count], ins);
            // An instruction that reads or sets guest time runs as the first instruction of its
            // block, where the interpreter's time (updated once per block) is exact.
            if (count > 0 && (kind & OpFlow.ReadsClock) != 0) break;
            count++;
            bool crosses = ins.Length > avail;
            if (crosses) page2 = mem.GetOrCreateCodePage(pa2 >> PhysicalMemory.PageShift);
            ip += (ulong)ins.Length;
            ipa += (ulong)ins.Length;
            if (kind != OpFlow.Plain || crosses || (ipa & 0xFFF) == 0) break;
        }
        var pinned = GC.AllocateArray<Insn>(count, pinned: true);
        scratch.AsSpan(0, count).CopyTo(pinned);
        var block = new Block { Insns = pinned, Count = count, PhysStart = pa, PhysEnd = pa + (ip - rip), Page = page, Page2 = page2 };
        // Re-reading the bytes is unnecessary: a guest write after the code map was set invalidates the
        // page, and the block is then rebuilt at the next lookup. A host write retires the blocks it
        // overlaps after bumping the generation: if it scanned before this block was published, the
        // generation read after publishing shows it (store-fence-load on both sides).
        // Only blocks published in the page are found by a host write's scan, so no valid block may live
        // outside it (in some vCPU's lookup cache): a block that lost the race to publish, or one
        // this replaces (another alias's), is retired here.
        page.NoteBlockBytes((int)(ip - rip));
        var raced = page.Publish(off, block, existing);
        if (raced != existing) block.Retire();
        else existing?.Retire();
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref page.WriteGeneration) != generation) block.Retire();
        cpu.BlocksDecoded++;
        if (cpu.Machine.Agents.BlockDecoded.Length != 0) cpu.Machine.BlockDecoded(cpu, rip, pa);
        return block;
    }
}
