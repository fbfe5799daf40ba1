using Harness.Machine;
using Harness.Machine.Memory;

namespace Harness.Dbt.CodeCache;

/// <summary>The code cache (or one of its pools) has no room left. Milestone 1 has no flush: the run stops.</summary>
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
///   page 0   shared stubs: per-vCPU exit stubs "popfq; jmp [rip+slot]", the indirect jmp/call
///            dispatcher entries "pushfq; cli; vmcall", and a dead-end "cli; hlt; jmp $" (code)
///   page 1   per-vCPU tx-nextpc-loc slots, one 64-byte line each (data only: host writes to it
///            never invalidate decoded code)
///   edges    the edge-stub pool (1/8 of the rest): one 8-byte "pushfq; cli; vmcall" per unchained edge
///   main     the main pool: translated blocks, 16-byte aligned, densely packed
/// </code>
/// Every byte is written with <see cref="PhysicalMemory.Write"/>, which invalidates code the
/// interpreter already decoded there, so new blocks and chaining patches are always refetched.
/// </summary>
public sealed class CodeCache
{
    public const ulong KernelAlias = 0xFFFF_FFFF_8000_0000;
    public const int MaxVcpus = 64;
    public const ulong ExitStubSize = 16, SlotStride = 64, EdgeStubSize = 8;
    public const ulong BlockAlign = 16;

    public readonly PhysicalMemory Memory;
    public readonly ulong PhysBase, Size, VirtBase;
    public readonly ulong StubPage, SlotPage;
    public readonly ulong IndirectJmpEntry, IndirectCallEntry, DeadEnd;
    public readonly Pool Edges, Main;

    public CodeCache(Machine.Machine machine)
    {
        Memory = machine.Memory;
        PhysBase = machine.ReservedBase;
        Size = machine.ReservedSize;
        if (PhysBase + Size > 0x8000_0000)
            throw new InvalidOperationException($"the reserved region [0x{PhysBase:x}, 0x{PhysBase + Size:x}) must lie below 2 GiB to be reachable through the -2 GiB kernel alias");
        if (Size < 64 * 1024)
            throw new InvalidOperationException($"the reserved region ({Size} bytes) is too small for a code cache (at least 64 KiB)");
        if (machine.Vcpus.Length > MaxVcpus) throw new InvalidOperationException($"at most {MaxVcpus} vCPUs");
        VirtBase = KernelAlias + PhysBase;
        StubPage = VirtBase;
        SlotPage = VirtBase + PhysicalMemory.PageSize;
        ulong poolsStart = VirtBase + 2 * PhysicalMemory.PageSize;
        ulong rest = VirtBase + Size - poolsStart;
        ulong edgeBytes = (rest / 8) & ~(PhysicalMemory.PageSize - 1);
        Edges = new Pool("edges", poolsStart, poolsStart + edgeBytes);
        Main = new Pool("main", poolsStart + edgeBytes, VirtBase + Size);

        // Page 0: exit stubs for every possible vCPU, then the shared entries.
        var page = new byte[PhysicalMemory.PageSize];
        Array.Fill(page, (byte)0xCC);
        for (int i = 0; i < MaxVcpus; i++)
        {
            ulong stub = ExitStub(i);
            int o = (int)(stub - StubPage);
            page[o] = 0x9D;                                   // popfq
            page[o + 1] = 0xFF; page[o + 2] = 0x25;           // jmp qword [rip + disp32]
            BitConverter.TryWriteBytes(page.AsSpan(o + 3), unchecked((int)(TxNextPcLoc(i) - (stub + 7))));
        }
        IndirectJmpEntry = StubPage + MaxVcpus * ExitStubSize;
        IndirectCallEntry = IndirectJmpEntry + 16;
        DeadEnd = IndirectCallEntry + 16;
        foreach (var e in new[] { IndirectJmpEntry, IndirectCallEntry })
            DispatcherEntryBytes.CopyTo(page.AsSpan((int)(e - StubPage)));
        new byte[] { 0xFA, 0xF4, 0xEB, 0xFC }.CopyTo(page.AsSpan((int)(DeadEnd - StubPage))); // cli; hlt; jmp $-2
        Write(StubPage, page);
        Write(SlotPage, new byte[PhysicalMemory.PageSize]);
    }

    /// <summary>"pushfq; cli; vmcall": how every edge stub and dispatcher entry enters the dispatcher.</summary>
    public static ReadOnlySpan<byte> DispatcherEntryBytes => [0x9C, 0xFA, 0x0F, 0x01, 0xC1];
    /// <summary>Offset of the instruction after the vmcall: the RIP the dispatcher sees.</summary>
    public const ulong DispatcherEntryLength = 5;

    /// <summary>vCPU i's exit stub: popfq; jmp [tx-nextpc-loc(i)].</summary>
    public ulong ExitStub(int vcpu) => StubPage + (ulong)vcpu * ExitStubSize;

    /// <summary>vCPU i's tx-nextpc-loc slot (data page).</summary>
    public ulong TxNextPcLoc(int vcpu) => SlotPage + (ulong)vcpu * SlotStride;

    public bool Contains(ulong va) => va - VirtBase < Size;

    public ulong ToPhys(ulong va) => Contains(va) ? va - VirtBase + PhysBase : throw new ArgumentOutOfRangeException(nameof(va), $"0x{va:x} is not in the code cache");

    public bool ContainsPhys(ulong pa) => pa - PhysBase < Size;

    /// <summary>
    /// Writes code-cache bytes through the machine (decoded code there is invalidated). The write is
    /// issued twice around a full fence: PhysicalMemory.Write stores the bytes and then loads the page's
    /// code-map byte with no fence in between, so on a TSO host the load can pass the store while
    /// another vCPU sets the code-map byte, fences and decodes the old bytes — a stale decode that is
    /// never invalidated (seen as a chained edge re-entering the dispatcher millions of times). After
    /// the fence, the second write's code-map load is ordered after the first store (a Dekker pair with
    /// the decoder's store-fence-load): either the decoder saw the new bytes or the second write sees its
    /// code-map byte and invalidates. The bytes are identical, so each store is still one value.
    /// </summary>
    public void Write(ulong va, ReadOnlySpan<byte> bytes)
    {
        ulong pa = ToPhys(va);
        Memory.Write(pa, bytes);
        Interlocked.MemoryBarrier();
        Memory.Write(pa, bytes);
    }

    public ulong ReadU64(ulong va) => Memory.ReadU64(ToPhys(va));
    public uint ReadU32(ulong va) => Memory.ReadU32(ToPhys(va));
}
