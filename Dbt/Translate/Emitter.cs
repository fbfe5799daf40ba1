using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// The translated instruction list of one block under construction, as the rules see it. Every
/// item gets a unique synthetic IP (Iced's BlockEncoder uses IPs as labels for branches inside the
/// block; RIP-relative operands of decoded instructions hold absolute addresses, so the IP of an
/// identity-translated instruction does not matter and BlockEncoder re-encodes them for their new
/// location). Branches that may later be chained are "patchable": they are laid out by
/// <see cref="BlockTranslator"/> as raw bytes whose rel32 is 4-byte aligned (padded with ignored
/// 0x2E prefixes, so alignment costs no executed instruction) and whose site is recorded.
/// </summary>
internal sealed class Emitter
{
    public const ulong IpStep = 16;

    internal struct Item
    {
        public Instruction Ins;
        /// <summary>Patchable rel32 branch: opcode bytes (E9, E8 or 0F 8x) and its absolute target.</summary>
        public byte[]? Opcode;
        public ulong Target;
        public Edge? Edge;
    }

    internal readonly List<Item> Items = new();
    private readonly BlockTranslator translator;
    private ulong nextIp = IpStep;

    public Emitter(BlockTranslator translator) => this.translator = translator;

    public BlockTranslator Translator => translator;

    /// <summary>The native instruction being translated and the address after it.</summary>
    public Instruction Native;
    public ulong NextNative => Native.NextIP;

    /// <summary>The synthetic IP the item added after n more items will get (a forward label).</summary>
    public ulong LabelAhead(int n) => nextIp + (ulong)n * IpStep;

    /// <summary>Adds an instruction (identity copy or synthetic); returns its synthetic IP.</summary>
    public ulong Add(Instruction ins)
    {
        ins.IP = nextIp;
        Items.Add(new Item { Ins = ins });
        nextIp += IpStep;
        return ins.IP;
    }

    /// <summary>The identity rule: the native instruction itself, re-encoded at its new address.</summary>
    public void Identity() => Add(Native);

    /// <summary>
    /// A rel32 branch to a native target: straight to its translation when one exists, else to a new
    /// edge stub that chains it on first use. opcode: E9 (jmp), E8 (call) or 0F 8x (jcc).
    /// </summary>
    public void BranchToNative(byte[] opcode, ulong nativeTarget, EdgeKind kind)
    {
        if (translator.TryLookup(nativeTarget, out ulong tx)) AddPatchable(opcode, tx, null);
        else
        {
            var e = translator.Edges.Create(nativeTarget, kind);
            AddPatchable(opcode, e.Stub, e);
        }
    }

    /// <summary>A rel32 branch to a fixed code-cache address (a dispatcher entry).</summary>
    public void BranchToCache(byte[] opcode, ulong cacheTarget) => AddPatchable(opcode, cacheTarget, null);

    private void AddPatchable(byte[] opcode, ulong target, Edge? edge)
    {
        // A placeholder of the final length without padding (pass 1 of the layout needs the size).
        var placeholder = Instruction.CreateDeclareByte(new byte[opcode.Length + 4]);
        placeholder.IP = nextIp;
        Items.Add(new Item { Ins = placeholder, Opcode = opcode, Target = target, Edge = edge });
        nextIp += IpStep;
    }

    public static byte[] Jmp => [0xE9];
    public static byte[] Call => [0xE8];
    public static byte[] Jcc(ConditionCode cc) => [0x0F, (byte)(0x80 + (int)cc - 1)];
}
