using Harness.Dbt.Cache;
using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// The translated instruction list of one block under construction, as the rules see it. Every
/// item gets a unique synthetic IP, item k's being (k + 1) * IpStep: a branch inside the block names
/// its target by that IP (a label), which the layout turns into the item's cache address. RIP-relative
/// operands of decoded instructions hold absolute addresses, so the IP of an identity-translated
/// instruction does not matter: the layout's encoder re-encodes them for their new location. Branches that may later be chained are "patchable": they are laid out by
/// <see cref="BlockTranslator"/> as raw bytes whose rel32 is 4-byte aligned (padded with ignored
/// 0x2E prefixes, so alignment costs no executed instruction) and whose site is recorded.
/// Rules (and client snippets) only ever append; a user's rule gets the same surface as the built-in
/// ones (docs/writing-rules.md).
/// </summary>
public sealed class Emitter
{
    public const ulong IpStep = 16;

    internal struct Item
    {
        public Instruction Ins;
        /// <summary>Patchable rel32 branch: opcode bytes (E9, E8 or 0F 8x) and its absolute target.</summary>
        public byte[]? Opcode;
        public ulong Target;
        public Edge? Edge;
        /// <summary>An entry-mode branch whose target is translated in the same batch (the rel32 is written then).</summary>
        public BlockTranslator.EntryLink? Entry;
        /// <summary>A "push imm32" placeholder whose immediate becomes the cache address of the item with this synthetic IP.</summary>
        public ulong PushAddressOfIp;
        /// <summary>The native instruction itself (identity rule): the native state after it is the one at its next instruction.</summary>
        public bool IsIdentity;
        /// <summary>
        /// Set by a rule (<see cref="ResumeLastAt"/>): at this item the stack and flags are native and
        /// the native state is at this address (0: none). For branch items a rule reaches after the
        /// native instruction's effect with interrupts possibly on, which the generic recovery rules
        /// cannot see (a loop's taken branch, a call-out after popfq).
        /// </summary>
        public ulong Resume;
    }

    /// <summary>Declares the native address the last item's boundary stands for (its stack and flags native): see <see cref="Item.Resume"/>.</summary>
    public void ResumeLastAt(ulong native)
    {
        var items = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(Items);
        items[^1].Resume = native;
    }

    internal readonly List<Item> Items;
    private readonly BlockTranslator translator;
    private ulong nextIp = IpStep;

    /// <summary>items: the translator's list, reused from block to block (blocks are translated one at a time, under its lock).</summary>
    internal Emitter(BlockTranslator translator, Harness.Smp.Vcpu v, int? slotDelta, List<Item> items)
    {
        items.Clear();
        Items = items;
        this.translator = translator;
        V = v;
        SlotDelta = slotDelta;
    }

    public BlockTranslator Translator => translator;
    public DbtOptions Options => translator.Options;
    public PerCpu PerCpu => translator.Cache.PerCpu;

    /// <summary>The vCPU whose page tables native code is read through.</summary>
    public readonly Harness.Smp.Vcpu V;

    /// <summary>
    /// Entry mode (the path from an interrupt gate to the kernel's write of the frame's redundant
    /// slot): the slot's address minus the current RSP, tracked instruction by instruction; null in
    /// normal mode (and once the slot has been written with the saved tx-nextpc-loc). See
    /// <see cref="EntryPath"/>.
    /// </summary>
    internal int? SlotDelta;

    /// <summary>The native instruction being translated and the address after it.</summary>
    public Instruction Native { get; internal set; }
    public ulong NextNative => Native.NextIP;

    /// <summary>The clients attached to the DBT (null: none): the hooks rules and the translator call.</summary>
    internal Clients.ClientSet? Clients => translator.Clients;

    /// <summary>The clients' bookkeeping for this block (the open segment); null without clients.</summary>
    internal Clients.BlockState? ClientState;

    /// <summary>Items emitted so far (client snippets patch their own later).</summary>
    internal int Count => Items.Count;

    /// <summary>Adds an instruction (identity copy or synthetic); returns its synthetic IP.</summary>
    public ulong Add(Instruction ins)
    {
        ins.IP = nextIp;
        Items.Add(new Item { Ins = ins });
        nextIp += IpStep;
        return ins.IP;
    }

    /// <summary>
    /// "push imm32" of the cache address where the items added after this rule's sequence begin (the
    /// continuation: a translated call's return address). Call <see cref="EndContinuationPush"/> with
    /// the returned handle once the sequence is complete; the layout patches the immediate (the
    /// cache lies in the top 2 GiB, so a sign-extended imm32 holds it).
    /// </summary>
    public int BeginContinuationPush()
    {
        var placeholder = Instruction.CreateDeclareByte(new byte[] { 0x68, 0, 0, 0, 0 });
        placeholder.IP = nextIp;
        Items.Add(new Item { Ins = placeholder, PushAddressOfIp = ulong.MaxValue });
        nextIp += IpStep;
        return Items.Count - 1;
    }

    public void EndContinuationPush(int handle)
    {
        var it = Items[handle];
        it.PushAddressOfIp = nextIp;
        Items[handle] = it;
    }

    /// <summary>
    /// A branch inside the block (a Code with a rel8 or rel32 target) to a point not emitted yet;
    /// returns a handle for <see cref="Bind"/>, which aims it at the next item added.
    /// </summary>
    public int BranchForward(Code branch) => BranchForward(Instruction.CreateBranch(branch, 0));

    /// <summary>A branch instruction as given (e.g. the native loop or jrcxz, prefixes kept) whose target <see cref="Bind"/> sets.</summary>
    public int BranchForward(Instruction branch)
    {
        Add(branch);
        return Items.Count - 1;
    }

    public void Bind(int branch)
    {
        var it = Items[branch];
        it.Ins.NearBranch64 = nextIp;
        Items[branch] = it;
    }

    /// <summary>Replaces the immediate of an emitted item (operand 1, e.g. the amount of a counter add).</summary>
    internal void SetImmediate(int item, int value)
    {
        var it = Items[item];
        it.Ins.SetImmediate(1, value);
        Items[item] = it;
    }

    /// <summary>The identity rule: the native instruction itself, re-encoded at its new address.</summary>
    public void Identity()
    {
        var ins = Native;
        if (ins.IsIPRelativeMemoryOperand && !ReachableFromCache(ins.IPRelativeMemoryAddress))
        {
            // The copy cannot keep a RIP-relative operand whose target is more than 2 GiB from the
            // cache. An absolute disp32 (sign-extended, no base) addresses the same bytes when the
            // target lies in the low 2 GiB or the top 2 GiB; elsewhere no encoding of this
            // instruction without a scratch register does.
            ulong target = ins.IPRelativeMemoryAddress;
            if ((ulong)(long)(int)target != target)
                throw new UnsupportedInstructionException(ins,
                    $"'{ins}' has a RIP-relative operand at 0x{target:x}, which neither a rel32 from the code cache (0x{translator.Cache.VirtBase:x}) nor a sign-extended disp32 reaches");
            ins.MemoryBase = Iced.Intel.Register.None;
            ins.MemoryDisplSize = 8; // "64-bit addressing" to Iced: [disp32] without an address-size prefix
            ins.MemoryDisplacement64 = target;
        }
        Add(ins);
        var it = Items[^1];
        it.IsIdentity = true;
        Items[^1] = it;
    }

    /// <summary>Whether a rel32 from anywhere in the code cache reaches target (with room for the instruction's length).</summary>
    private bool ReachableFromCache(ulong target)
    {
        var c = translator.Cache;
        const long Limit = int.MaxValue - 64;
        long fromStart = unchecked((long)(target - c.VirtBase)), fromEnd = unchecked((long)(target - (c.VirtBase + c.Size)));
        return fromStart is > -Limit and < Limit && fromEnd is > -Limit and < Limit;
    }

    /// <summary>
    /// A rel32 branch to a native target: straight to its translation when one exists, else to a new
    /// edge stub that chains it on first use. opcode: E9 (jmp), E8 (call) or 0F 8x (jcc).
    /// </summary>
    public void BranchToNative(byte[] opcode, ulong nativeTarget, EdgeKind kind)
    {
        // Planted bug (DbtOptions.PlantedJmpFlipsCarry): the direct jmp's translation changes CF.
        if (kind == EdgeKind.Jmp && SlotDelta is null && Options.PlantedJmpFlipsCarry) Add(Instruction.Create(Code.Cmc));
        if (SlotDelta is int delta)
        {
            // Entry mode: no dispatcher entry may happen before the save, so the path is translated
            // before it is published (in entry mode) and branched to directly.
            if (kind is not (EdgeKind.Jmp or EdgeKind.Jcc or EdgeKind.FallThrough))
                throw new UnsupportedInstructionException(Native, $"the interrupt entry path leaves through '{Native}' before writing the frame's redundant slot");
            AddPatchable(opcode, 0, null, translator.EntryTarget(nativeTarget, delta));
            return;
        }
        if (translator.TryLookup(nativeTarget, out ulong tx)) AddPatchable(opcode, tx, null);
        else
        {
            var e = translator.Edges.Create(nativeTarget, kind);
            AddPatchable(opcode, e.Stub, e);
        }
    }

    /// <summary>
    /// A jmp to a new call-out stub: the dispatcher runs effect, then continues at the translation of
    /// continuation. The block should end here. what names it in diagnostics (default: the native instruction).
    /// </summary>
    public void CallOut(CallOut effect, ulong continuation, string? what = null, bool exitsDirectly = false)
    {
        if (SlotDelta is not null)
            throw new UnsupportedInstructionException(Native, $"'{Native}' needs the dispatcher, but it is on an interrupt entry path before the frame's redundant slot is written");
        var e = translator.Edges.Create(continuation, EdgeKind.CallOut, effect, what, resume: Native.IP, emulated: what is null ? Native : null, exitsDirectly: exitsDirectly);
        AddPatchable(Jmp, e.Stub, e);
    }

    /// <summary>A rel32 branch to a fixed code-cache address (a dispatcher entry).</summary>
    public void BranchToCache(byte[] opcode, ulong cacheTarget) => AddPatchable(opcode, cacheTarget, null);

    private void AddPatchable(byte[] opcode, ulong target, Edge? edge, BlockTranslator.EntryLink? entry = null)
    {
        // A placeholder of the final length without padding (pass 1 of the layout needs the size).
        var placeholder = Instruction.CreateDeclareByte(new byte[opcode.Length + 4]);
        placeholder.IP = nextIp;
        Items.Add(new Item { Ins = placeholder, Opcode = opcode, Target = target, Edge = edge, Entry = entry });
        nextIp += IpStep;
    }

    /// <summary>qword gs:[offset] (absolute disp32 through GS: a DBT per-CPU word).</summary>
    public static MemoryOperand Gs(ulong offset) => new(Register.None, Register.None, 1, (long)offset, 4, false, Register.GS);

    // The opcodes of the patchable rel32 branches (the layout appends the displacement); shared, never written.
    public static readonly byte[] Jmp = [0xE9];
    public static readonly byte[] Call = [0xE8];
    private static readonly byte[][] jcc = Enumerable.Range(0, 16).Select(k => new byte[] { 0x0F, (byte)(0x80 + k) }).ToArray();
    public static byte[] Jcc(ConditionCode cc) => jcc[(int)cc - 1];
}
