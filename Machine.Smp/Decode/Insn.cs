using System.Runtime.CompilerServices;
using Iced.Intel;

namespace Harness.Smp.Decode;

/// <summary>
/// One decoded instruction in the machine's own compact form: the handler to run plus operands
/// already resolved to register indices, a memory-operand recipe and an immediate. Built once per
/// instruction address by <see cref="BlockBuilder"/>, executed many times.
/// </summary>
public unsafe struct Insn
{
    public delegate*<Vcpu, ref Insn, void> Exec;
    public ulong Ip;
    public ulong NextIp;
    /// <summary>Immediate (sign-extended as the encoding specifies), or the absolute branch target.</summary>
    public ulong Imm;
    /// <summary>Memory displacement; absolute target for RIP-relative operands.</summary>
    public long Disp;
    public byte Size;       // operand size in bytes: 1, 2, 4, 8
    public byte SizeLog;    // log2(Size)
    public byte R0, R1;     // register operands in operand order (Reg.None when absent)
    public byte R2;         // a third register operand (the BMI VEX forms, Exec/Bmi.cs)
    public byte MBase, MIndex, MScale, MSeg; // MScale is a shift; MSeg: 0 none, 1 fs, 2 gs
    public byte Sub;        // family-specific selector: ALU op, condition code, shift kind...
    public byte Size2;      // source size for movzx/movsx/movsxd, second size where needed
    public InsnFlags Flags;
    public Code Code;       // Iced code, for messages
    public byte Length;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Has(InsnFlags f) => (Flags & f) != 0;
}

[Flags]
public enum InsnFlags : ushort
{
    None = 0,
    Lock = 1,
    Rep = 2,        // rep / repe
    RepNe = 4,
    Addr32 = 8,     // 0x67: 32-bit effective address
    MemOperand = 16,
    ImmSecond = 32, // operand extraction: the first immediate is taken
    Branch = 64,    // the handler sets RIP
    EndsBlock = 128,// a builder asks for the block to end after this instruction
    ReadsClock = 256,// a builder marks an operand form that reads or sets guest time (mov/pop to SS: OpFlow.ReadsClock)
}

/// <summary>A run of decoded instructions ending at a control transfer, a system instruction or a page end.</summary>
public sealed unsafe class Block
{
    /// <summary>Pinned (POH) so the interpreter walks it with a pointer: no bounds checks, no EH-spilled index.</summary>
    public Insn[] Insns
    {
        get => insns;
        init { insns = value; Ptr = (Insn*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref value[0]); }
    }
    private readonly Insn[] insns = null!;
    public Insn* Ptr { get; private init; }
    public required int Count;
    public required ulong PhysStart;
    public required CodePage Page;
    /// <summary>Set when the last instruction straddles into the next physical page.</summary>
    public CodePage? Page2;
    /// <summary>Physical end (exclusive) of the block's bytes.</summary>
    public required ulong PhysEnd;
    /// <summary>Retired alone: a host write overlapped its bytes (PhysicalMemory.Write) while its page stayed valid.</summary>
    public volatile bool Dead;

    /// <summary>Runs through the interpreter so far (racy across vCPUs, which only moves the threshold).</summary>
    internal int Heat;

    /// <summary>The block compiled to host code once hot (Compile/BlockCompiler.cs); null before.</summary>
    internal Compile.CompiledBlock? Code;
    /// <summary>The compiled region the block is part of (its edges lead to the other blocks of the page).</summary>
    internal volatile Compile.Region? Region;

    /// <summary>
    /// Retires the block: it is no longer looked up, and the compiled region it is part of no longer
    /// enters it (nor any other of its blocks) from inside.
    /// </summary>
    internal void Retire()
    {
        Dead = true;
        Interlocked.MemoryBarrier(); // Dekker with BlockCompiler.Publish: one of us sees the other's write
        if (Region is { } r) r.Dead = true;
    }

    /// <summary>Why compiling the block failed (a compiler bug): the next vCPU to run it stops the machine with it.</summary>
    internal Exception? CompileError;

    public bool Valid
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => !Dead && Page.Valid && (Page2 is null || Page2.Valid);
    }
}

/// <summary>
/// The decoded blocks of one physical page. A guest write to the page invalidates the whole object;
/// a fresh one is made on the next decode. A host write (a DBT adding a block or patching a branch)
/// retires only the blocks it overlaps (PhysicalMemory.Write), counting in WriteGeneration so that
/// a decode racing with it retires its own block. Shared by every vCPU.
/// </summary>
public sealed class CodePage(ulong ppn)
{
    public readonly ulong Ppn = ppn;
    public volatile bool Valid = true;
    // The blocks starting at each byte offset, in chunks of ChunkSize offsets allocated on first use:
    // a flat 4096-entry array (32 KiB) per page with code was most of what a short translated run
    // allocated (the cache's pages and the guest's), so Properties' thousands of runs paid GCs for it.
    private const int ChunkBits = 8, ChunkSize = 1 << ChunkBits;
    private readonly Block?[]?[] chunks = new Block?[]?[4096 >> ChunkBits];

    /// <summary>The block published at offset (null if none).</summary>
    public Block? BlockAt(int offset) =>
        Volatile.Read(ref chunks[offset >> ChunkBits]) is { } c ? Volatile.Read(ref c[offset & (ChunkSize - 1)]) : null;

    /// <summary>Publishes block at offset if the slot still holds expected (a CAS); returns what it held.</summary>
    public Block? Publish(int offset, Block block, Block? expected)
    {
        var c = Volatile.Read(ref chunks[offset >> ChunkBits]);
        if (c is null)
        {
            var fresh = new Block?[ChunkSize];
            c = Interlocked.CompareExchange(ref chunks[offset >> ChunkBits], fresh, null) ?? fresh;
        }
        return Interlocked.CompareExchange(ref c[offset & (ChunkSize - 1)], block, expected);
    }
    public int WriteGeneration;

    /// <summary>The blocks published in the page now (for the block compiler's page regions).</summary>
    internal List<Block> Published()
    {
        var list = new List<Block>();
        for (int i = 0; i < chunks.Length; i++)
            if (Volatile.Read(ref chunks[i]) is { } chunk)
                for (int j = 0; j < chunk.Length; j++)
                    if (Volatile.Read(ref chunk[j]) is { } b) list.Add(b);
        return list;
    }

    /// <summary>1 while a compilation of this page's hot blocks is queued (BlockCompiler.Request).</summary>
    internal int CompileRequested;

    /// <summary>
    /// The longest block ever published in this page (bytes; only grows): how far before a
    /// host write its overlap scan must start. Raised before a block is published (a full fence), so
    /// a scan that reads a smaller value bumped the generation before the publisher re-checks it.
    /// </summary>
    public int MaxBlockBytes;

    internal void NoteBlockBytes(int bytes)
    {
        int seen = Volatile.Read(ref MaxBlockBytes);
        while (bytes > seen)
        {
            int was = Interlocked.CompareExchange(ref MaxBlockBytes, bytes, seen);
            if (was == seen) return;
            seen = was;
        }
        Interlocked.MemoryBarrier(); // the same ordering when no store was needed
    }
}
