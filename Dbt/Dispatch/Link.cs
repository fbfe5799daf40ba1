using Harness.Dbt.Cache;
using Harness.Smp.Control;

namespace Harness.Dbt.Dispatch;

// Linking, in one place (as DynamoRIO's link.c): the edges of untranslated direct branches, their
// stubs and table, and the rel32 patches that chain a branch to its target's translation.

public enum EdgeKind { Jmp, Jcc, Call, FallThrough, CallOut }

/// <summary>
/// A host call-out (the DBT's "module code" for an instruction whose effect the translator must
/// see: lidt, sidt, wrmsr of LSTAR or GS base, rdmsr of LSTAR). Runs in the dispatcher on the
/// entering vCPU with interrupts off; the stack holds [flags] above the native RSP. After it the
/// dispatcher continues at the native address it returns, or at the edge's target (the native
/// instruction after the one emulated) when it returns null.
/// </summary>
public delegate ulong? CallOut(Harness.Smp.Vcpu v, ulong nativeRsp);

/// <summary>
/// One not-yet-chained direct branch: its stub in the edge pool ("pushfq; cli; vmcall"), the native
/// target, and the patch site (the 4-byte-aligned rel32 of the translated branch that targets the
/// stub). The first dispatcher entry through the stub chains the branch straight to the target's
/// translation; afterwards the stub is dead code.
/// </summary>
public sealed class Edge
{
    public required ulong Stub { get; init; }
    public required ulong Target { get; init; }
    public required EdgeKind Kind { get; init; }
    /// <summary>For <see cref="EdgeKind.CallOut"/>: what to do before continuing at Target (never chained).</summary>
    public CallOut? Effect { get; init; }
    /// <summary>For call-outs: the native instruction emulated (diagnostics).</summary>
    public string? What
    {
        // Formatted on first use: Iced builds a new formatter per ToString, which cost as much as
        // translating the block when every wrmsr was named at translation time.
        get => what ??= Emulated?.ToString();
        init => what = value;
    }
    private string? what;

    /// <summary>For call-outs: the emulated instruction, when What is left to be formatted from it.</summary>
    public Iced.Intel.Instruction? Emulated { get; init; }
    /// <summary>
    /// The native address whose state a vCPU inside the stub is in (before its vmcall): the branch
    /// target for a branch edge (the branch was taken), the emulated instruction for a call-out.
    /// </summary>
    public ulong Resume { get; init; }
    /// <summary>Address of the branch's rel32 in the main pool; set before the block is published.</summary>
    public ulong PatchSite { get; internal set; }
    /// <summary>
    /// A call-out that leaves the dispatcher by setting RIP to tx with its saved flags popped (what
    /// "popfq; jmp tx" does) instead of through the exit stub, whose jmp reads GS: the DRK-style
    /// entry and iretq stubs, which run with the user's GS on the way in from or out to user mode.
    /// </summary>
    public bool ExitsDirectly { get; init; }
    internal int chained;
    public bool Chained => Volatile.Read(ref chained) != 0;
}

/// <summary>
/// The host-side table from edge-stub address to <see cref="Edge"/>. Stubs are fixed-size, so the
/// lookup is an array index (lock-free); entries are added under the translator lock and published
/// with a release store before the stub can be reached.
/// </summary>
public sealed class EdgeTable
{
    private readonly CodeCache cache;
    // Indexed by stub slot, in chunks allocated as stubs are: a flat array for the whole edge pool
    // (1 MiB of references for an 8 MiB region) made every DBT attach a large-object allocation,
    // and Properties' thousands of short translated runs paid a gen-2 collection every few of them.
    private const int ChunkBits = 9, ChunkSize = 1 << ChunkBits;
    private readonly Edge?[]?[] chunks;
    private int count;

    private readonly bool plantedNoCli;
    private readonly Harness.Smp.Machine machine;
    private readonly DbtOptions options;
    private readonly DbtStats stats;

    public EdgeTable(Harness.Smp.Machine machine, CodeCache cache, DbtOptions options, DbtStats stats)
    {
        this.machine = machine;
        this.cache = cache;
        this.options = options;
        this.stats = stats;
        plantedNoCli = options.PlantedEdgeWithoutCli;
        ulong slots = cache.Edges.Capacity / CodeCache.EdgeStubSize;
        chunks = new Edge?[]?[(slots + ChunkSize - 1) >> ChunkBits];
    }

    public int Count => Volatile.Read(ref count);

    /// <summary>Allocates and writes a new stub for an edge to target (caller holds the translator lock).</summary>
    public Edge Create(ulong target, EdgeKind kind, CallOut? effect = null, string? what = null, ulong? resume = null, Iced.Intel.Instruction? emulated = null, bool exitsDirectly = false)
    {
        ulong stub = cache.Edges.Allocate(CodeCache.EdgeStubSize, CodeCache.EdgeStubSize);
        var e = new Edge { Stub = stub, Target = target, Kind = kind, Effect = effect, What = what, Emulated = emulated, Resume = resume ?? target, ExitsDirectly = exitsDirectly };
        Span<byte> bytes = stackalloc byte[(int)CodeCache.EdgeStubSize];
        bytes.Fill(0xCC);
        CodeCache.DispatcherEntryBytes.CopyTo(bytes);
        if (plantedNoCli) bytes[1] = 0x90; // nop in place of cli
        ulong slot = (stub - cache.Edges.Start) / CodeCache.EdgeStubSize;
        var chunk = chunks[slot >> ChunkBits];
        if (chunk is null) Volatile.Write(ref chunks[slot >> ChunkBits], chunk = new Edge?[ChunkSize]);
        Volatile.Write(ref chunk[slot & (ChunkSize - 1)], e);
        cache.Write(stub, bytes);
        Interlocked.Increment(ref count);
        return e;
    }

    /// <summary>Forgets every edge (cache wipe; the pool is reset by the caller).</summary>
    internal void Clear()
    {
        foreach (var chunk in chunks) if (chunk is not null) Array.Clear(chunk);
        Volatile.Write(ref count, 0);
    }

    /// <summary>The edge whose stub starts at stub, or null.</summary>
    public Edge? Lookup(ulong stub)
    {
        ulong off = stub - cache.Edges.Start;
        if (off >= cache.Edges.Capacity || off % CodeCache.EdgeStubSize != 0) return null;
        ulong slot = off / CodeCache.EdgeStubSize;
        var chunk = Volatile.Read(ref chunks[slot >> ChunkBits]);
        return chunk is null ? null : Volatile.Read(ref chunk[slot & (ChunkSize - 1)]);
    }

    // ---- linking: the rel32 fields of translated branches ------------------------------------------

    /// <summary>The rel32 of a branch whose 4-byte displacement field is at site (it counts from the field's end).</summary>
    internal static int Rel32(ulong site, ulong target)
    {
        long d = unchecked((long)(target - (site + 4)));
        return d is >= int.MinValue and <= int.MaxValue ? (int)d
            : throw new Translate.TranslationException($"branch at 0x{site:x} cannot reach 0x{target:x} with a rel32");
    }

    /// <summary>Points the rel32 field at site at target before any vCPU can run it (an entry path's branch to a block of its own batch).</summary>
    internal void Patch(ulong site, ulong target) => cache.Write(site, BitConverter.GetBytes(Rel32(site, target)));

    /// <summary>
    /// Points the edge's branch at tx: one aligned 4-byte store of the new rel32 (a vCPU decoding the
    /// page concurrently sees the old or the new displacement, never a mix). Exactly one vCPU patches.
    /// </summary>
    internal void Chain(Harness.Smp.Vcpu v, Edge edge, ulong tx)
    {
        if (Interlocked.CompareExchange(ref edge.chained, 1, 0) != 0) return;
        Span<byte> rel = stackalloc byte[4];
        // Planted bug (DbtOptions.PlantedChainRelativeToStub): the displacement taken from the wrong base.
        BitConverter.TryWriteBytes(rel, Rel32(options.PlantedChainRelativeToStub ? edge.Stub : edge.PatchSite, tx));
        // Under Coyote, another vCPU may run right before the patch (or between the planted bug's stores).
        if (Seams.Points) machine.Control.Point(v, PointKind.CodePatch, edge.PatchSite);
        if (options.PlantedTornChainingPatch)
            for (int i = 0; i < 4; i++)
            {
                cache.Write(edge.PatchSite + (ulong)i, rel.Slice(i, 1));
                if (Seams.Points && i < 3) machine.Control.Point(v, PointKind.CodePatch, edge.PatchSite + (ulong)i + 1);
            }
        else cache.Write(edge.PatchSite, rel);
        // The stub is left as it is: another vCPU may be executing it right now (between its pushfq
        // and vmcall), so rewriting it would make that vCPU run from the middle of new bytes. A vCPU
        // still running the branch from before the patch enters the dispatcher once more and leaves
        // to tx.
        stats.CountChained();
    }
}
