using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.InteropServices;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp.Compile;

/// <summary>
/// A decoded block's entry into the compiled code of its page's hot blocks (its region): runs from
/// the block through the region while no event is due, leaves RIP, guest time and the lazy flag
/// record in the state as the interpreter would, and returns.
/// </summary>
internal unsafe delegate void CompiledBlock(Vcpu c, CpuState* s);

/// <summary>
/// One compiled region: its blocks and the page they lie in. Dead once any of its blocks is retired
/// (<see cref="Block.Retire"/>): its edges then leave for the loop, which looks every block up afresh.
/// </summary>
internal sealed unsafe class Region
{
    public Region(Block[] blocks)
    {
        Blocks = blocks;
        Page = blocks[0].Page;
        Starts = blocks.Select(b => (nint)b.Ptr).ToArray();
    }

    public readonly Block[] Blocks;
    public readonly CodePage Page;
    /// <summary>
    /// Where each block's decoded instructions are: the code reads them from here (slow paths and
    /// handler calls need an instruction's address), not as constants, so one compiled method
    /// serves every machine whose page holds the same blocks (BlockCompiler's code cache).
    /// </summary>
    public readonly nint[] Starts;
    public volatile bool Dead;
}

/// <summary>What a region's entry delegates are bound to: the region and the block it enters at.</summary>
internal sealed class RegionEntry(Region region, int entry)
{
    public readonly Region Region = region;
    public readonly int Entry = entry;
}

/// <summary>
/// Writes one region's IL. Each instruction becomes straight-line code with its operands as
/// constants (register offsets, immediates, displacement, size); guest registers are cached in IL
/// locals within a block and the arithmetic flags of the last flag-setting instruction live in IL
/// locals; both reach the state only where something can look at them: a block exit or edge, a
/// slow path (a fault pushes RFLAGS and sees the registers), an instruction run through its
/// interpreter handler. Conditions read by jcc/cmov/setcc are
/// computed from those locals directly where the flag-setter is known at compile time (cmp; jb
/// becomes one unsigned compare). An instruction without a rule here calls its interpreter handler,
/// so every block compiles and the rules only decide how fast.
///
/// A region: the hot blocks of one virtual page, each compiled once, in one method entered at any
/// of them (a switch on the entry). Jmp, jcc and fall-through edges between them are direct IL
/// branches (same page: the translation the interpreter's lookup checked for the entry covers
/// them), taken only when the interpreter would have run the next block without servicing
/// anything: no event flag, the budget covers the block, it is still valid, and no instruction
/// asked for the block to end. Across an edge the flags stay in locals, the operation in a local too.
/// </summary>
internal sealed unsafe partial class BlockEmitter
{
    private readonly ILGenerator il;
    private readonly DynamicMethod method;
    private readonly List<Block> region = [];
    private readonly Dictionary<ulong, int> regionIndex = [];
    private readonly Label[] starts;
    private readonly LocalBuilder tlbR, tlbW, codeMap, user, ent, ea, a, b, r, target, cond;
    private readonly LocalBuilder fOp, fLog, fRes, fS1, fS2, fCf, fCfNext;
    /// <summary>The block being emitted.</summary>
    private Block block = null!;

    /// <summary>The instruction being emitted.</summary>
    private Insn* X;
    private int index;
    /// <summary>
    /// The flag-setting operation whose record is in the flag locals, known at compile time; null:
    /// known only at run time, in fOp and fLog (the record as the state had it, or as an edge left it).
    /// </summary>
    private FlagOp? pending;
    private int pendingLog;
    /// <summary>The current instruction may have set <see cref="Vcpu.BreakBlock"/> (a store, a handler call).</summary>
    private bool mayBreak;
    /// <summary>The block's last instruction was a branch rule, which emitted the block's ending itself.</summary>
    private bool ended;
    /// <summary>Some instruction of the block may have set <see cref="Vcpu.BreakBlock"/>: its edges test it.</summary>
    private bool blockMayBreak;

    /// <summary>
    /// Instructions one region may hold: the runtime's compile time grows faster than the IL, and a
    /// method past its size limits is compiled without optimization (MinOpts).
    /// </summary>
    public const int MaxRegionInstructions = 300;

    public int Fallbacks { get; private set; }

    private static readonly int OffRip = Off(nameof(CpuState.Rip)), OffRetired = Off(nameof(CpuState.Retired));
    private static readonly int OffLazyOp = Off(nameof(CpuState.LazyOp)), OffLazySize = Off(nameof(CpuState.LazySize));
    private static readonly int OffLazyRes = Off(nameof(CpuState.LazyRes)), OffLazySrc1 = Off(nameof(CpuState.LazySrc1));
    private static readonly int OffLazySrc2 = Off(nameof(CpuState.LazySrc2)), OffLazyCfIn = Off(nameof(CpuState.LazyCfIn));
    private static readonly int OffFsBase = Off(nameof(CpuState.FsBase)), OffGsBase = Off(nameof(CpuState.GsBase));

    private const BindingFlags Any = BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic;
    private static readonly FieldInfo FTlbR = VcpuField("tlbR"), FTlbW = VcpuField("tlbW"), FCodeMap = VcpuField("codeMap");
    private static readonly FieldInfo FUser = VcpuField(nameof(Vcpu.UserBit)), FBreak = VcpuField(nameof(Vcpu.BreakBlock)), FCurInsn = VcpuField("curInsn");
    private static readonly MethodInfo MReadSlow = VcpuMethod(nameof(Vcpu.ReadSlowAt)), MWriteSlow = VcpuMethod(nameof(Vcpu.WriteSlowAt));
    private static readonly MethodInfo MCodeWritten = VcpuMethod(nameof(Vcpu.CodeWrittenAt));
    private static readonly FieldInfo FBlockStart = VcpuField("blockStart"), FEventFlag = VcpuField("eventFlag"), FNextEvent = VcpuField("nextEvent");
    private static readonly FieldInfo FRegionStarts = typeof(Region).GetField(nameof(Region.Starts))!;
    private static readonly FieldInfo FRegionDead = typeof(Region).GetField(nameof(Region.Dead))!, FPageValid = typeof(CodePage).GetField(nameof(CodePage.Valid))!;
    private static readonly MethodInfo MCond = VcpuMethod(nameof(Vcpu.Cond));
    private static readonly MethodInfo MCf = typeof(Smp.Vcpu).GetProperty("CF", Any)!.GetMethod!;
    private static readonly Type[] HandlerParameters = [typeof(Smp.Vcpu), typeof(Insn).MakeByRefType()];

    private static int Off(string field) => (int)Marshal.OffsetOf<CpuState>(field);
    private static FieldInfo VcpuField(string name) => typeof(Smp.Vcpu).GetField(name, Any) ?? throw new MissingFieldException(nameof(Smp.Vcpu), name);
    private static MethodInfo VcpuMethod(string name) => typeof(Smp.Vcpu).GetMethod(name, Any) ?? throw new MissingMethodException(nameof(Smp.Vcpu), name);

    private readonly CompilerPlant plant;

    public BlockEmitter(IReadOnlyList<Block> blocks, CompilerPlant plant = CompilerPlant.None)
    {
        this.plant = plant;
        foreach (var blk in blocks)
        {
            regionIndex[blk.Insns[0].Ip] = region.Count;
            region.Add(blk);
        }
        method = new DynamicMethod($"region_{region[0].Insns[0].Ip >> 12:x}", typeof(void), [typeof(RegionEntry), typeof(Vcpu), typeof(CpuState*)], typeof(Vcpu).Module, skipVisibility: true);
        il = method.GetILGenerator();
        tlbR = il.DeclareLocal(typeof(nint));
        tlbW = il.DeclareLocal(typeof(nint));
        codeMap = il.DeclareLocal(typeof(nint));
        user = il.DeclareLocal(typeof(ulong));
        ent = il.DeclareLocal(typeof(nint));
        ea = il.DeclareLocal(typeof(ulong));
        a = il.DeclareLocal(typeof(ulong));
        b = il.DeclareLocal(typeof(ulong));
        r = il.DeclareLocal(typeof(ulong));
        target = il.DeclareLocal(typeof(ulong));
        cond = il.DeclareLocal(typeof(int));
        fOp = il.DeclareLocal(typeof(int));
        fLog = il.DeclareLocal(typeof(int));
        fRes = il.DeclareLocal(typeof(ulong));
        fS1 = il.DeclareLocal(typeof(ulong));
        fS2 = il.DeclareLocal(typeof(ulong));
        fCf = il.DeclareLocal(typeof(ulong));
        fCfNext = il.DeclareLocal(typeof(ulong));
        regionLocal = il.DeclareLocal(typeof(Region));
        pageLocal = il.DeclareLocal(typeof(CodePage));
        retired = il.DeclareLocal(typeof(long));
        budgetEnd = il.DeclareLocal(typeof(long));
        starts = new Label[region.Count];
        for (int k = 0; k < starts.Length; k++) starts[k] = il.DefineLabel();
    }

    private readonly LocalBuilder regionLocal, pageLocal;
    /// <summary>Guest time at the start of the current block (the state's Retired, kept here), and when the next event is due.</summary>
    private readonly LocalBuilder retired, budgetEnd;

    /// <summary>Emits the region; returns it and each block's entry, in the order the blocks were given.</summary>
    public (Region Region, CompiledBlock[] Entries) Finish()
    {
        // A dry call (no vCPU: BlockCompiler.Jit) only makes the runtime compile the method.
        Label run = il.DefineLabel();
        LdCpu(); il.Emit(OpCodes.Brtrue, run);
        Op(OpCodes.Ret);
        il.MarkLabel(run);
        // What does not change while a region runs (a CPL change ends its block, through a handler) is read once.
        LdCpu(); il.Emit(OpCodes.Ldfld, FTlbR); St(tlbR);
        LdCpu(); il.Emit(OpCodes.Ldfld, FTlbW); St(tlbW);
        LdCpu(); il.Emit(OpCodes.Ldfld, FCodeMap); St(codeMap);
        LdCpu(); il.Emit(OpCodes.Ldfld, FUser); St(user);
        LoadFlags();
        LoadTime();
        il.Emit(OpCodes.Ldarg_0); il.Emit(OpCodes.Ldfld, typeof(RegionEntry).GetField(nameof(RegionEntry.Region))!); St(regionLocal);
        Ld(regionLocal); il.Emit(OpCodes.Ldfld, typeof(Region).GetField(nameof(Region.Page))!); St(pageLocal);
        il.Emit(OpCodes.Ldarg_0); il.Emit(OpCodes.Ldfld, typeof(RegionEntry).GetField(nameof(RegionEntry.Entry))!);
        il.Emit(OpCodes.Switch, starts);
        Op(OpCodes.Ret);
        for (int k = 0; k < region.Count; k++)
        {
            block = region[k];
            il.MarkLabel(starts[k]);
            pending = null; // every edge arrives with the record in the locals
            ForgetRegs();   // and the registers in the state
            EmitBlock();
        }
        Method = method;
        return Bind(method, region.ToArray());
    }

    /// <summary>The compiled method (the code cache keeps it for other machines with the same blocks).</summary>
    public DynamicMethod? Method { get; private set; }

    /// <summary>A compiled region method bound to blocks that decode the same as those it was emitted for.</summary>
    public static (Region Region, CompiledBlock[] Entries) Bind(DynamicMethod method, Block[] blocks)
    {
        var compiled = new Region(blocks);
        var entries = new CompiledBlock[blocks.Length];
        for (int k = 0; k < blocks.Length; k++) entries[k] = (CompiledBlock)method.CreateDelegate(typeof(CompiledBlock), new RegionEntry(compiled, k));
        return (compiled, entries);
    }

    /// <summary>Instructions in the region's blocks.</summary>
    public int Instructions => region.Sum(b => b.Count);

    private void EmitBlock()
    {
        int n = block.Count;
        ended = false;
        blockMayBreak = false;
        for (index = 0; index < n; index++)
        {
            X = block.Ptr + index;
            mayBreak = false;
            if (!TryRule()) Fallback();
            if (index < n - 1 && mayBreak) ExitIfBreak();
        }
        index = n - 1;
        if (ended) return;
        AdvanceTime(n);
        if (X->Exec == null || !rules.ContainsKey((nint)X->Exec)) // a handler ended it: whatever it did, back to the loop
        {
            FlushRegs();
            Spill();
            StoreTime();
            if ((X->Flags & InsnFlags.Branch) == 0) StoreState64(OffRip, () => Ldc(X->NextIp));
            Op(OpCodes.Ret);
            return;
        }
        Leave(X->NextIp);
    }

    // ---- IL primitives ---------------------------------------------------------------------------

    private void LdCpu() => il.Emit(OpCodes.Ldarg_1);
    private void Ldc(long v) => il.Emit(OpCodes.Ldc_I8, v);
    private void Ldc(ulong v) => il.Emit(OpCodes.Ldc_I8, (long)v);
    private void LdcI4(int v) => il.Emit(OpCodes.Ldc_I4, v);
    private void LdcPtr(void* p) { il.Emit(OpCodes.Ldc_I8, (long)p); il.Emit(OpCodes.Conv_U); }

    /// <summary>Pushes the current block's first instruction's address (from the region: see <see cref="Region.Starts"/>).</summary>
    private void LdBlockStart()
    {
        Ld(regionLocal); il.Emit(OpCodes.Ldfld, FRegionStarts); LdcI4(regionIndex[block.Insns[0].Ip]); il.Emit(OpCodes.Ldelem_I);
    }

    /// <summary>Pushes the current instruction's address.</summary>
    private void LdInsn()
    {
        LdBlockStart();
        if (index != 0) { LdcI4(index * sizeof(Insn)); Op(OpCodes.Add); }
    }
    private void Ld(LocalBuilder l) => il.Emit(OpCodes.Ldloc, l);
    private void St(LocalBuilder l) => il.Emit(OpCodes.Stloc, l);
    private void Op(OpCode o) => il.Emit(o);

    private void StateAddr(int offset)
    {
        il.Emit(OpCodes.Ldarg_2);
        if (offset != 0) { LdcI4(offset); Op(OpCodes.Add); }
    }

    private void LoadState64(int offset) { StateAddr(offset); Op(OpCodes.Ldind_I8); }

    private void StoreState64(int offset, Action value) { StateAddr(offset); value(); Op(OpCodes.Stind_I8); }

    private void StoreState64(int offset, LocalBuilder value) => StoreState64(offset, () => Ld(value));

    private static ulong SizeMask(int log) => Smp.Vcpu.SizeMask(log);

    /// <summary>Masks the value on the stack to the operand size.</summary>
    private void Mask(int log)
    {
        if (log < 3) { Ldc(SizeMask(log)); Op(OpCodes.And); }
    }

    /// <summary>Sign-extends the value on the stack from the operand size to 64 bits.</summary>
    private void SignExtend(int log)
    {
        switch (log)
        {
            case 0: Op(OpCodes.Conv_I1); Op(OpCodes.Conv_I8); break;
            case 1: Op(OpCodes.Conv_I2); Op(OpCodes.Conv_I8); break;
            case 2: Op(OpCodes.Conv_I4); Op(OpCodes.Conv_I8); break;
        }
    }

    // ---- guest registers: cached in locals within a block -----------------------------------------
    //
    // A register is read from the state at its first use in a block and written back where the
    // state must be precise: before a call that can fault or read it (a slow path, a handler), and
    // at every exit and edge. Each block starts with nothing cached, so an edge needs no agreement
    // about which registers are where.

    private readonly LocalBuilder?[] regs = new LocalBuilder?[16];
    /// <summary>Registers whose local holds the value (loaded), and those newer than the state (dirty): bit r.</summary>
    private int loaded, dirty;

    private LocalBuilder RegLocal(int r) => regs[r] ??= il.DeclareLocal(typeof(ulong));

    /// <summary>Pushes a whole 64-bit register (only on the instruction's main path: it may load it).</summary>
    private void LdGpr(int r)
    {
        var l = RegLocal(r);
        if ((loaded & (1 << r)) == 0) { LoadState64(r * 8); St(l); loaded |= 1 << r; }
        Ld(l);
    }

    private void StGpr(int r, Action value)
    {
        value();
        St(RegLocal(r));
        loaded |= 1 << r;
        dirty |= 1 << r;
    }

    /// <summary>Writes the dirty registers to the state on a side path (a slow path, an exit): they stay dirty on the main path.</summary>
    private void SpillRegs()
    {
        for (int r = 0; r < 16; r++)
            if ((dirty & (1 << r)) != 0) StoreState64(r * 8, regs[r]!);
    }

    /// <summary>Writes the dirty registers to the state on the main path: the state and the locals agree afterwards.</summary>
    private void FlushRegs()
    {
        SpillRegs();
        dirty = 0;
    }

    /// <summary>A handler ran: it may have changed any register in the state.</summary>
    private void ForgetRegs() => loaded = dirty = 0;

    /// <summary>Pushes a register at an operand size, zero-extended (8-bit numbers from 16 up are AH..BH).</summary>
    private void LoadReg(int reg, int log)
    {
        if (log == 0 && reg >= Reg.HighByteBase) { LdGpr(reg - Reg.HighByteBase); LdcI4(8); Op(OpCodes.Shr_Un); Op(OpCodes.Conv_U1); Op(OpCodes.Conv_U8); return; }
        LdGpr(reg);
        switch (log)
        {
            case 0: Op(OpCodes.Conv_U1); Op(OpCodes.Conv_U8); break;
            case 1: Op(OpCodes.Conv_U2); Op(OpCodes.Conv_U8); break;
            case 2: Op(OpCodes.Conv_U4); Op(OpCodes.Conv_U8); break;
        }
    }

    /// <summary>Writes a register with x86-64 semantics: 32-bit writes zero-extend, 8/16-bit writes merge.</summary>
    private void StoreReg(int reg, int log, Action value)
    {
        if (log == 0 && reg >= Reg.HighByteBase)
        {
            int full = reg - Reg.HighByteBase;
            StGpr(full, () => { LdGpr(full); Ldc(~0xFF00UL); Op(OpCodes.And); value(); Op(OpCodes.Conv_U1); Op(OpCodes.Conv_U8); LdcI4(8); Op(OpCodes.Shl); Op(OpCodes.Or); });
            return;
        }
        switch (log)
        {
            case 0: StGpr(reg, () => { LdGpr(reg); Ldc(~0xFFUL); Op(OpCodes.And); value(); Op(OpCodes.Conv_U1); Op(OpCodes.Conv_U8); Op(OpCodes.Or); }); break;
            case 1: StGpr(reg, () => { LdGpr(reg); Ldc(~0xFFFFUL); Op(OpCodes.And); value(); Op(OpCodes.Conv_U2); Op(OpCodes.Conv_U8); Op(OpCodes.Or); }); break;
            case 2: StGpr(reg, () => { value(); Op(OpCodes.Conv_U4); Op(OpCodes.Conv_U8); }); break;
            default: StGpr(reg, value); break;
        }
    }

    private void StoreReg(int reg, int log, LocalBuilder value) => StoreReg(reg, log, () => Ld(value));

    /// <summary>The effective address of the instruction's memory operand, into <see cref="ea"/> (Vcpu.Ea's recipe).</summary>
    private void Ea()
    {
        ref Insn x = ref *X;
        Ldc(x.Disp);
        if (x.MBase != Reg.None) { LdGpr(x.MBase); Op(OpCodes.Add); }
        if (x.MIndex != Reg.None)
        {
            LdGpr(x.MIndex);
            if (x.MScale != 0) { LdcI4(x.MScale); Op(OpCodes.Shl); }
            Op(OpCodes.Add);
        }
        if ((x.Flags & InsnFlags.Addr32) != 0) { Op(OpCodes.Conv_U4); Op(OpCodes.Conv_U8); }
        if (x.MSeg != 0) { LoadState64(x.MSeg == 1 ? OffFsBase : OffGsBase); Op(OpCodes.Add); }
        St(ea);
    }

    // ---- memory: the software TLB probe inline, the slow path a call ------------------------------

    /// <summary>Sets ent to the TLB entry for ea and branches to slow unless it hits and the access stays in the page.</summary>
    private void Probe(LocalBuilder tlb, int log, Label slow)
    {
        Ld(tlb);
        Ld(ea); LdcI4(12); Op(OpCodes.Shr_Un); Op(OpCodes.Conv_U4); LdcI4(Smp.Vcpu.TlbMask); Op(OpCodes.And);
        LdcI4(sizeof(TlbEntry)); Op(OpCodes.Mul); Op(OpCodes.Add);
        St(ent);
        Ld(ent); Op(OpCodes.Ldind_I8);
        Ld(ea); LdcI4(12); Op(OpCodes.Shr_Un); LdcI4(1); Op(OpCodes.Shl); Ld(user); Op(OpCodes.Or);
        il.Emit(OpCodes.Bne_Un, slow);
        if (log > 0)
        {
            Ld(ea); Op(OpCodes.Conv_U4); LdcI4(0xFFF); Op(OpCodes.And); LdcI4(0x1000 - (1 << log));
            il.Emit(OpCodes.Bgt_Un, slow);
        }
    }

    /// <summary>Host address of ea through the probed entry (Addend + va).</summary>
    private void HostAddress()
    {
        Ld(ent); LdcI4(8); Op(OpCodes.Add); Op(OpCodes.Ldind_I8);
        Ld(ea); Op(OpCodes.Add); Op(OpCodes.Conv_U);
    }

    /// <summary>Loads `1 << log` bytes at ea into dest (zero-extended).</summary>
    private void Read(int log, LocalBuilder dest)
    {
        Label slow = il.DefineLabel(), done = il.DefineLabel();
        Probe(tlbR, log, slow);
        HostAddress();
        switch (log)
        {
            case 0: Op(OpCodes.Ldind_U1); Op(OpCodes.Conv_U8); break;
            case 1: Op(OpCodes.Ldind_U2); Op(OpCodes.Conv_U8); break;
            case 2: Op(OpCodes.Ldind_U4); Op(OpCodes.Conv_U8); break;
            default: Op(OpCodes.Ldind_I8); break;
        }
        St(dest);
        il.Emit(OpCodes.Br, done);
        il.MarkLabel(slow);
        SpillRegs();
        StoreTime();
        LdCpu(); Ld(ea); LdcI4(1 << log); LdInsn(); LdBlockStart(); FlagRecord(); il.Emit(OpCodes.Call, MReadSlow); St(dest);
        il.MarkLabel(done);
    }

    /// <summary>Stores the low `1 << log` bytes of value at ea; a store to decoded code ends the block after this instruction.</summary>
    private void Write(int log, LocalBuilder value)
    {
        Label slow = il.DefineLabel(), done = il.DefineLabel();
        Probe(tlbW, log, slow);
        HostAddress();
        Ld(value);
        switch (log)
        {
            case 0: Op(OpCodes.Conv_U1); Op(OpCodes.Stind_I1); break;
            case 1: Op(OpCodes.Conv_U2); Op(OpCodes.Stind_I2); break;
            case 2: Op(OpCodes.Conv_U4); Op(OpCodes.Stind_I4); break;
            default: Op(OpCodes.Stind_I8); break;
        }
        Ld(codeMap); Ld(ent); LdcI4(16); Op(OpCodes.Add); Op(OpCodes.Ldind_I8); Op(OpCodes.Conv_U); Op(OpCodes.Add); Op(OpCodes.Ldind_U1);
        il.Emit(OpCodes.Brfalse, done);
        LdCpu(); Ld(ent); LdcI4(16); Op(OpCodes.Add); Op(OpCodes.Ldind_I8); il.Emit(OpCodes.Call, MCodeWritten);
        il.Emit(OpCodes.Br, done);
        il.MarkLabel(slow);
        SpillRegs();
        StoreTime();
        LdCpu(); Ld(ea); LdcI4(1 << log); Ld(value); LdInsn(); LdBlockStart(); FlagRecord(); il.Emit(OpCodes.Call, MWriteSlow);
        il.MarkLabel(done);
        mayBreak = true;
        blockMayBreak = true;
    }

    // ---- lazy flags --------------------------------------------------------------------------------

    /// <summary>The flag record of this instruction: stays in locals until something may look at it.</summary>
    private void SetFlags(FlagOp op, int log, Action res, Action src1, Action src2, Action? carryIn = null)
    {
        res(); St(fRes);
        src1(); St(fS1);
        src2(); St(fS2);
        if (carryIn is not null) { carryIn(); St(fCf); }
        pending = op;
        pendingLog = log;
    }

    private static bool HasCarryIn(FlagOp op) => op is FlagOp.Inc or FlagOp.Dec or FlagOp.Adc or FlagOp.Sbb;

    /// <summary>Writes the flag record to the state (the compile-time state is unchanged: the locals still hold it).</summary>
    private void Spill()
    {
        StateAddr(OffLazyOp); if (pending is { } op) LdcI4((int)op); else Ld(fOp); Op(OpCodes.Stind_I4);
        StateAddr(OffLazySize); if (pending is not null) LdcI4(pendingLog); else Ld(fLog); Op(OpCodes.Stind_I4);
        StoreState64(OffLazyRes, fRes);
        StoreState64(OffLazySrc1, fS1);
        StoreState64(OffLazySrc2, fS2);
        if (pending is not { } known || HasCarryIn(known)) StoreState64(OffLazyCfIn, fCf);
    }

    /// <summary>Pushes the flag record as the slow paths take it: operation, size log, result, sources, carry-in.</summary>
    private void FlagRecord()
    {
        if (pending is { } op) { LdcI4((int)op); LdcI4(pendingLog); } else { Ld(fOp); Ld(fLog); }
        Ld(fRes); Ld(fS1); Ld(fS2); Ld(fCf);
    }

    /// <summary>The state's flag record into the locals (at entry, and after a handler that may have changed it).</summary>
    private void LoadFlags()
    {
        StateAddr(OffLazyOp); Op(OpCodes.Ldind_I4); St(fOp);
        StateAddr(OffLazySize); Op(OpCodes.Ldind_I4); St(fLog);
        LoadState64(OffLazyRes); St(fRes);
        LoadState64(OffLazySrc1); St(fS1);
        LoadState64(OffLazySrc2); St(fS2);
        LoadState64(OffLazyCfIn); St(fCf);
        pending = null;
    }

    /// <summary>Makes the run-time description of the record match the compile-time one (before an edge).</summary>
    private void Describe()
    {
        if (pending is not { } op) return;
        LdcI4((int)op); St(fOp);
        LdcI4(pendingLog); St(fLog);
    }

    private void ZeroFlag() { Ld(fRes); Mask(pendingLog); Ldc(0L); Op(OpCodes.Ceq); }
    private void SignFlag() { Ld(fRes); Ldc(Smp.Vcpu.SignBit(pendingLog)); Op(OpCodes.And); Ldc(0L); Op(OpCodes.Cgt_Un); }
    private void Not() { LdcI4(0); Op(OpCodes.Ceq); }

    /// <summary>Pushes condition code cc (0 or 1, int32), from the locals when the flag-setter allows, else through Vcpu.Cond.</summary>
    private void Cond(int cc)
    {
        bool negate = (cc & 1) != 0;
        int log = pendingLog;
        switch (pending)
        {
            case FlagOp.Sub when cc is >= 2 and <= 7:
                Ld(fS1); Mask(log); Ld(fS2); Mask(log);
                switch (cc >> 1)
                {
                    case 1: Op(plant == CompilerPlant.BelowIsAbove ? OpCodes.Cgt_Un : OpCodes.Clt_Un); break; // b / ae: CF
                    case 2: Op(OpCodes.Ceq); break;             // e / ne
                    default: Op(OpCodes.Cgt_Un); negate = !negate; break; // be / a: a > b is "above"
                }
                if (negate) Not();
                return;
            case FlagOp.Sub when cc >= 12:
                Ld(fS1); Mask(log); SignExtend(log); Ld(fS2); Mask(log); SignExtend(log);
                if (cc >> 1 == 6) Op(OpCodes.Clt);              // l / ge
                else { Op(OpCodes.Cgt); negate = !negate; }     // le / g
                if (negate) Not();
                return;
            case FlagOp.Logic when cc is not (10 or 11):
                switch (cc >> 1)
                {
                    case 0: case 1: LdcI4(0); break;            // OF = CF = 0
                    case 2: case 3: ZeroFlag(); break;          // e, be (CF = 0)
                    case 4: case 6: SignFlag(); break;          // s, l (OF = 0)
                    default: ZeroFlag(); SignFlag(); Op(OpCodes.Or); break; // le
                }
                if (negate) Not();
                return;
            case FlagOp.Add when cc is 2 or 3:
                Ld(fRes); Mask(log); Ld(fS1); Mask(log); Op(OpCodes.Clt_Un);
                if (negate) Not();
                return;
            case not null when cc is 4 or 5 or 8 or 9:
                if (cc < 8) ZeroFlag(); else SignFlag();
                if (negate) Not();
                return;
        }
        Spill(); // the locals stay valid: later conditions may still read them
        LdCpu(); LdcI4(cc); il.Emit(OpCodes.Call, MCond);
    }

    /// <summary>Pushes CF (0 or 1, int32).</summary>
    private void CarryFlag()
    {
        int log = pendingLog;
        switch (pending)
        {
            case FlagOp.Sub: Ld(fS1); Mask(log); Ld(fS2); Mask(log); Op(OpCodes.Clt_Un); return;
            case FlagOp.Add: Ld(fRes); Mask(log); Ld(fS1); Mask(log); Op(OpCodes.Clt_Un); return;
            case FlagOp.Logic: LdcI4(0); return;
            case FlagOp.Inc or FlagOp.Dec: Ld(fCf); Ldc(0L); Op(OpCodes.Cgt_Un); return;
        }
        Spill();
        LdCpu(); il.Emit(OpCodes.Call, MCf);
    }

    // ---- leaving the block -------------------------------------------------------------------------

    private void ExitIfBreak()
    {
        Label go = il.DefineLabel();
        LdCpu(); il.Emit(OpCodes.Ldfld, FBreak);
        il.Emit(OpCodes.Brfalse, go);
        Spill();
        SpillRegs();
        StoreState64(OffRip, () => Ldc(X->NextIp)); // not a branch: branches end their blocks
        StoreState64(OffRetired, () => { Ld(retired); LdcI4(index + 1); Op(OpCodes.Conv_I8); Op(OpCodes.Add); });
        Op(OpCodes.Ret);
        il.MarkLabel(go);
    }

    private void AdvanceTime(int count)
    {
        Ld(retired); LdcI4(count); Op(OpCodes.Conv_I8); Op(OpCodes.Add); St(retired);
    }

    /// <summary>Guest time and the next event's time into the locals (at entry, and after a handler, which may change either).</summary>
    private void LoadTime()
    {
        LoadState64(OffRetired); St(retired);
        LdCpu(); il.Emit(OpCodes.Ldfld, FNextEvent); St(budgetEnd);
    }

    /// <summary>Guest time to the state: before a call that may fault or read it, and at every exit.</summary>
    private void StoreTime() => StoreState64(OffRetired, retired);

    /// <summary>The block's instructions are done: guest time advances by all of them (before its branch leaves).</summary>
    private void EndBlock()
    {
        AdvanceTime(block.Count);
        ended = true;
    }

    /// <summary>
    /// Continues at a constant address: into the region when the interpreter would have gone on
    /// without servicing anything, else back to the loop.
    /// </summary>
    private void Leave(ulong ip)
    {
        FlushRegs();
        if (regionIndex.TryGetValue(ip, out int k))
        {
            // Just what the loop checks before running the next block: no event waiting (and no
            // instruction asked for the block to end), the budget covers all of it, it is valid.
            Label exit = il.DefineLabel();
            LdCpu(); il.Emit(OpCodes.Volatile); il.Emit(OpCodes.Ldfld, FEventFlag); il.Emit(OpCodes.Brtrue, exit);
            if (blockMayBreak) { LdCpu(); il.Emit(OpCodes.Ldfld, FBreak); il.Emit(OpCodes.Brtrue, exit); }
            Ld(retired); Ldc((long)(plant == CompilerPlant.EdgeOvershootsBudget ? 1 : region[k].Count)); Op(OpCodes.Add);
            Ld(budgetEnd); il.Emit(OpCodes.Bgt, exit);
            Ld(regionLocal); il.Emit(OpCodes.Volatile); il.Emit(OpCodes.Ldfld, FRegionDead); il.Emit(OpCodes.Brtrue, exit);
            Ld(pageLocal); il.Emit(OpCodes.Volatile); il.Emit(OpCodes.Ldfld, FPageValid); il.Emit(OpCodes.Brfalse, exit);
            Describe();
            il.Emit(OpCodes.Br, starts[k]);
            il.MarkLabel(exit);
        }
        Spill();
        StoreTime();
        StoreState64(OffRip, () => Ldc(ip));
        Op(OpCodes.Ret);
    }

    /// <summary>Continues at the address in <see cref="target"/> (ret, call and jmp through a register): back to the loop.</summary>
    private void LeaveComputed()
    {
        FlushRegs();
        Spill();
        StoreTime();
        StoreState64(OffRip, target);
        Op(OpCodes.Ret);
    }

    // ---- an instruction without a rule: its interpreter handler ------------------------------------

    private void Fallback()
    {
        Fallbacks++;
        Spill();
        FlushRegs();
        StoreTime();
        LdCpu(); LdBlockStart(); il.Emit(OpCodes.Stfld, FBlockStart); // Now and a fault count from the block's start
        LdCpu(); LdInsn(); il.Emit(OpCodes.Stfld, FCurInsn);
        LdCpu(); LdInsn(); LdcPtr(X->Exec);
        il.EmitCalli(OpCodes.Calli, CallingConventions.Standard, typeof(void), HandlerParameters, null);
        mayBreak = true;
        blockMayBreak = true;
        ForgetRegs();
        LoadFlags();
        LoadTime();
    }
}
