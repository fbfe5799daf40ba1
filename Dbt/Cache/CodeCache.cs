using Harness.Smp;
using Harness.Dbt.Indirect;
using Harness.Smp.Memory;

namespace Harness.Dbt.Cache;

/// <summary>The code cache (or one of its pools) has no room left: the dispatcher flushes it (switchoff, wipe, switchon) and retries; still full right after a flush, the run stops naming the pool.</summary>
public sealed class CodeCacheFullException(string message) : Exception(message);

/// <summary>
/// A bump allocator over one range of the code cache. Blocks are only ever added (never freed or
/// moved); callers hold the translator lock, so the allocator itself is not thread-safe.
/// </summary>
public sealed class Pool(string name, ulong start, ulong end)
{
    public readonly string Name = name;
    public readonly ulong Start = start, End = end;
    private ulong next = start;

    public ulong Next => next;
    public ulong Used => next - Start;
    public ulong Capacity => End - Start;

    /// <summary>Empties the pool (cache wipe).</summary>
    public void Reset() => next = Start;

    /// <summary>The address the next allocation of the given alignment would get (nothing is reserved).</summary>
    public ulong Peek(ulong align) => (next + align - 1) & ~(align - 1);

    /// <summary>Reserves size bytes at the given alignment and returns their (virtual) address.</summary>
    public ulong Allocate(ulong size, ulong align)
    {
        ulong at = Peek(align);
        if (at + size > End || at + size < at)
            throw new CodeCacheFullException($"code cache pool '{Name}' is full ({Used} of {Capacity} bytes used, {size} more needed)");
        next = at + size;
        return at;
    }
}

/// <summary>
/// The code cache: the machine's reserved region at the top of RAM, addressed through the kernel's
/// -2 GiB alias (virtual 0xFFFFFFFF80000000 + physical) so that every rel32 branch and RIP-relative
/// operand between translated code and kernel text/data reaches. One cache is shared by all vCPUs.
///
/// Layout (virtual, from the base):
/// <code>
///   page 0   shared stubs: the exit stub "popfq; jmp [gs:tx-nextpc-loc]", a dead end
///            "cli; hlt; jmp $", the jumptable's level-2 routine ending in the miss vmcall (code)
///   data     DBT data, never executed (host writes never invalidate decoded code): each vCPU's own
///            per-CPU area (used as GS base by images that never set one), shadow IDTs, jumptables
///   edges    the edge-stub pool (1/8 of the rest): one 8-byte "pushfq; cli; vmcall" per unchained edge
///   main     the main pool: translated blocks, 16-byte aligned, densely packed
/// </code>
/// Every byte is written with <see cref="PhysicalMemory.Write"/>, which invalidates code the
/// interpreter already decoded there, so new blocks and chaining patches are always refetched.
/// </summary>
public sealed class CodeCache
{
    public const ulong KernelAlias = Harness.Smp.Boot.BootLayout.KernelAlias;
    public const int MaxVcpus = 64;
    public const ulong EdgeStubSize = 8;
    public const ulong BlockAlign = 16;
    /// <summary>Bytes of each vCPU's own per-CPU area (for images without a GS base of their own).</summary>
    public const ulong OwnAreaStride = 128;

    public readonly PhysicalMemory Memory;
    public readonly PerCpu PerCpu;
    public readonly ulong PhysBase, Size, VirtBase;
    public readonly ulong StubPage;
    public readonly ulong ExitStub, DeadEnd;
    public readonly Pool Data, Edges, Main;
    private readonly ulong ownAreas;

    public CodeCache(Machine machine, PerCpu perCpu, ulong? mainPoolLimit = null, bool plantedMoveToFrontWithInterrupts = false)
    {
        Memory = machine.Memory;
        PerCpu = perCpu;
        PhysBase = machine.ReservedBase;
        Size = machine.ReservedSize;
        if (PhysBase + Size > 0x8000_0000)
            throw new InvalidOperationException($"the reserved region [0x{PhysBase:x}, 0x{PhysBase + Size:x}) must lie below 2 GiB to be reachable through the -2 GiB kernel alias");
        if (Size < 1024 * 1024)
            throw new InvalidOperationException($"the reserved region ({Size} bytes) is too small for a code cache (at least 1 MiB)");
        if (machine.Vcpus.Length > MaxVcpus) throw new InvalidOperationException($"at most {MaxVcpus} vCPUs");
        VirtBase = KernelAlias + PhysBase;
        StubPage = VirtBase;
        ulong dataStart = VirtBase + PhysicalMemory.PageSize;
        // Data: own per-CPU areas, shadow IDTs and one jumptable per vCPU (PerCpu.JumpTableBytes each).
        ulong dataBytes = RoundUp(MaxVcpus * OwnAreaStride + 16 * PhysicalMemory.PageSize + (ulong)machine.Vcpus.Length * JumpTable.Bytes, PhysicalMemory.PageSize);
        Data = new Pool("data", dataStart, dataStart + dataBytes);
        ulong poolsStart = Data.End;
        // A region that ends at 2 GiB ends the alias at 2^64: the pools stop one page short, so no
        // pool end wraps to 0.
        ulong end = PhysBase + Size == 0x8000_0000 ? VirtBase + Size - PhysicalMemory.PageSize : VirtBase + Size;
        if (end - poolsStart < 256 * 1024 || poolsStart > end)
            throw new InvalidOperationException($"the reserved region ({Size} bytes) is too small for {machine.Vcpus.Length} vCPUs' jumptables plus code");
        ulong rest = end - poolsStart;
        ulong edgeBytes = (rest / 8) & ~(PhysicalMemory.PageSize - 1);
        Edges = new Pool("edges", poolsStart, poolsStart + edgeBytes);
        ulong mainStart = poolsStart + edgeBytes;
        Main = new Pool("main", mainStart, mainPoolLimit is ulong limit ? Math.Min(end, mainStart + limit) : end);
        ownAreas = Data.Allocate(MaxVcpus * OwnAreaStride, PhysicalMemory.PageSize);
        // Zeroed unless it already is (fresh RAM always is: a check reads the zero page, a write
        // would fault in every page of the pool and allocate a large array on each attach).
        var data = Memory.Span(ToPhys(Data.Start), (int)dataBytes);
        if (data.ContainsAnyExcept((byte)0)) data.Clear();

        // Page 0: the exit stub, the jumptable's level-2 routine, the dead end.
        var page = new byte[PhysicalMemory.PageSize];
        Array.Fill(page, (byte)0xCC);
        ExitStub = StubPage;
        Stubs.Exit(ExitStub, perCpu).CopyTo(page, 0);
        DeadEnd = StubPage + 16;
        Stubs.DeadEnd(DeadEnd).CopyTo(page.AsSpan((int)(DeadEnd - StubPage)));
        var (l2, routine) = JumpTableLevel2.Assemble(StubPage + 32, perCpu, plantedMoveToFrontWithInterrupts: plantedMoveToFrontWithInterrupts);
        l2.CopyTo(page.AsSpan(32));
        Level2 = routine;
        JumpTableL2 = routine.Probe;
        IndirectMissVmcall = routine.MissVmcall;
        // The DRK-style configuration's exits and entry (DbtOptions.InterruptsViaDispatcher), at the
        // page's end, after the level-2 routine.
        if (32 + l2.Length > DrkStubsOffset) throw new InvalidOperationException("the level-2 routine overlaps the DRK stubs");
        IretqStub = StubPage + DrkStubsOffset;
        Stubs.Iretq(IretqStub).CopyTo(page.AsSpan(DrkStubsOffset));
        SyscallVmcall = StubPage + DrkStubsOffset + 8;
        Stubs.Vmcall(SyscallVmcall).CopyTo(page.AsSpan(DrkStubsOffset + 8));
        Write(StubPage, page);
    }

    private const int DrkStubsOffset = 0xFF0;

    /// <summary>"iretq", where a DRK-style iretq call-out leaves the dispatcher once the frame's RIP is translated.</summary>
    public readonly ulong IretqStub;

    /// <summary>"vmcall", LSTAR under the DRK-style configuration: syscall enters the dispatcher (nothing pushed: RSP and GS are the user's).</summary>
    public readonly ulong SyscallVmcall;

    /// <summary>The shared level-2 jumptable routine and its entries (one per inline lookup form).</summary>
    public readonly JumpTableLevel2 Level2;
    /// <summary>The level-2 routine's probe: where the stack form's inline level-1 miss jumps.</summary>
    public readonly ulong JumpTableL2;
    /// <summary>Address of the vmcall a jumptable miss enters the dispatcher through (stack: [flags, target]).</summary>
    public readonly ulong IndirectMissVmcall;

    private static ulong RoundUp(ulong v, ulong a) => (v + a - 1) & ~(a - 1);

    /// <summary>"pushfq; cli; vmcall": how every edge stub and dispatcher entry enters the dispatcher.</summary>
    public static ReadOnlySpan<byte> DispatcherEntryBytes => dispatcherEntry;
    private static readonly byte[] dispatcherEntry = Stubs.DispatcherEntry();
    /// <summary>Length of the vmcall: the dispatcher identifies an entry by the vmcall's address (RIP - 3).</summary>
    public const ulong VmcallLength = 3;
    /// <summary>Offset of the vmcall in an edge stub.</summary>
    public const ulong EdgeVmcallOffset = 2;

    /// <summary>
    /// The GS base the DBT gives vCPU i when the image has none (GS base 0): an area of the data pool
    /// positioned so that the module per-CPU words (<see cref="PerCpu"/>) fall inside it.
    /// </summary>
    public ulong OwnGsBase(int vcpu) => ownAreas + (ulong)vcpu * OwnAreaStride - (ulong)PerCpu.Offset;

    public bool Contains(ulong va) => va - VirtBase < Size;

    public ulong ToPhys(ulong va) => Contains(va) ? va - VirtBase + PhysBase : throw new ArgumentOutOfRangeException(nameof(va), $"0x{va:x} is not in the code cache");

    public bool ContainsPhys(ulong pa) => pa - PhysBase < Size;

    /// <summary>
    /// Writes code-cache bytes through the machine, so decoded code there is invalidated.
    /// PhysicalMemory.Write fences between its stores and its load of the page's code-map byte (a
    /// Dekker pair with the decoder's store-fence-load): either a vCPU decoding the page concurrently
    /// sees the new bytes or this write sees its code-map byte and retires the stale decode. (Without
    /// that fence a chained edge once re-entered the dispatcher millions of times.)
    /// </summary>
    public void Write(ulong va, ReadOnlySpan<byte> bytes) => Memory.Write(ToPhys(va), bytes);

    /// <summary>Writes DBT data (never code): one plain write.</summary>
    public void WriteData(ulong va, ReadOnlySpan<byte> bytes) => Memory.Write(ToPhys(va), bytes);

    public ulong ReadU64(ulong va) => Memory.ReadU64(ToPhys(va));
    public uint ReadU32(ulong va) => Memory.ReadU32(ToPhys(va));
}
