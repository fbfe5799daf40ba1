using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Harness.Smp.Decode;

namespace Harness.Smp.Memory;

/// <summary>
/// Guest physical RAM: one zeroed native allocation, so aligned host loads and stores of up to
/// 8 bytes are single-copy atomic across vCPU threads exactly as on the x86-64 host (TSO).
/// Also owns the code-page map that makes writes to decoded code invalidate the decode cache.
/// Physical addresses at or above Size read as all ones and ignore writes.
/// </summary>
public sealed unsafe class PhysicalMemory : IDisposable
{
    public const int PageShift = 12;
    private const ulong PageMask = 0xFFF;
    public const ulong PageSize = 1UL << PageShift;

    public readonly ulong Size;
    /// <summary>The RAM itself, for the interpreter and host agents' fast paths: valid only until Dispose (check IsDisposed, or use the accessors, which throw).</summary>
    public readonly byte* Base;
    /// <summary>One byte per physical page: non-zero while decoded blocks exist for the page.</summary>
    internal readonly byte* CodeMap;
    // Decode caches by page number, in chunks of 512 pages allocated on first use: a flat array for
    // the whole RAM (128 KiB for 64 MiB) was a large-object allocation per machine, which Properties'
    // thousands of short runs paid for in gen-2 collections.
    private const int ChunkBits = 9, ChunkSize = 1 << ChunkBits;
    private readonly CodePage?[]?[] codePages;

    private ref CodePage? Slot(ulong ppn)
    {
        var c = Volatile.Read(ref codePages[ppn >> ChunkBits]);
        if (c is null)
        {
            var fresh = new CodePage?[ChunkSize];
            c = Interlocked.CompareExchange(ref codePages[ppn >> ChunkBits], fresh, null) ?? fresh;
        }
        return ref c[(int)(ppn & (ChunkSize - 1))];
    }

    private CodePage? PageOrNull(ulong ppn) =>
        Volatile.Read(ref codePages[ppn >> ChunkBits]) is { } c ? Volatile.Read(ref c[(int)(ppn & (ChunkSize - 1))]) : null;

    public PhysicalMemory(ulong size)
    {
        if (size < 2 * 1024 * 1024 || size % PageSize != 0)
            throw new ArgumentException($"memory size must be a multiple of 4 KiB and at least 2 MiB (got {size})");
        Size = size;
        // calloc of a large block maps fresh zero pages lazily: RAM the guest never touches costs
        // nothing. The base is 16-byte aligned, so aligned guest accesses stay aligned on the host.
        Base = (byte*)NativeMemory.AllocZeroed((nuint)size);
        CodeMap = (byte*)NativeMemory.AllocZeroed((nuint)(size >> PageShift));
        codePages = new CodePage?[]?[((size >> PageShift) + ChunkSize - 1) >> ChunkBits];
    }

    public ulong PageCount => Size >> PageShift;

    private volatile bool disposed;

    /// <summary>True once the RAM is freed: every accessor then throws ObjectDisposedException (Base must not be used).</summary>
    public bool IsDisposed => disposed;

    public void ThrowIfDisposed()
    {
        if (disposed) throw new ObjectDisposedException(nameof(PhysicalMemory), "the machine's guest memory was freed (the Machine was disposed); read results before disposing it");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool InRam(ulong pa, ulong len = 1) => pa < Size && len <= Size - pa;

    public Span<byte> Span(ulong pa, int len)
    {
        ThrowIfDisposed();
        if (!InRam(pa, (ulong)len)) throw new ArgumentOutOfRangeException(nameof(pa), $"physical range 0x{pa:x}+{len} outside RAM");
        return new Span<byte>(Base + pa, len);
    }

    /// <summary>Zeroes a physical range of any length (a large bss).</summary>
    public void Clear(ulong pa, ulong len)
    {
        ThrowIfDisposed();
        if (!InRam(pa, len)) throw new ArgumentOutOfRangeException(nameof(pa), $"physical range 0x{pa:x}+0x{len:x} outside RAM");
        NativeMemory.Clear(Base + pa, (nuint)len);
    }

    public ulong ReadU64(ulong pa) { ThrowIfDisposed(); return InRam(pa, 8) ? *(ulong*)(Base + pa) : ulong.MaxValue; }
    public uint ReadU32(ulong pa) { ThrowIfDisposed(); return InRam(pa, 4) ? *(uint*)(Base + pa) : uint.MaxValue; }

    /// <summary>Host-side write (loader, boot setup, host call-outs): honours code invalidation.</summary>
    public void Write(ulong pa, ReadOnlySpan<byte> data)
    {
        data.CopyTo(Span(pa, data.Length));
        Interlocked.MemoryBarrier(); // the stores before the code-map loads (store-load order needs a fence)
        ulong end = pa + (ulong)data.Length;
        for (ulong p = pa >> PageShift; p <= (end - 1) >> PageShift && data.Length > 0; p++)
            if (CodeMap[p] != 0) RetireOverlapping(p, Math.Max(pa, p << PageShift), Math.Min(end, (p + 1) << PageShift));
    }

    /// <summary>
    /// A host write to [from, to) on a page with decoded code: retires only the blocks whose bytes it
    /// overlaps, so a DBT appending blocks to a page (or patching one branch) does not make every vCPU
    /// re-decode the rest of it. Bytes in the first 15 of the page may belong to a block that
    /// straddles in from the previous page (found only through that page): then, and when the page
    /// object is not published yet, the whole page goes.
    /// </summary>
    private void RetireOverlapping(ulong ppn, ulong from, ulong to)
    {
        var page = PageOrNull(ppn);
        if (page is null || (from & PageMask) < 15) { InvalidateCode(ppn); return; }
        Interlocked.Increment(ref page.WriteGeneration); // a full fence: before the scan's loads
        ulong pageBase = ppn << PageShift;
        // Blocks starting more than the page's longest block before the write cannot overlap it. A
        // block published after this read was raised after our increment, so its publisher sees the
        // new generation and retires it itself.
        ulong reach = (ulong)Volatile.Read(ref page.MaxBlockBytes);
        int first = (int)(from - pageBase < reach ? 0 : from - pageBase - reach);
        int last = (int)(to - pageBase);
        for (int off = first; off < last; off++)
        {
            var b = page.BlockAt(off);
            if (b is not null && b.PhysStart < to && b.PhysEnd > from) b.Retire();
        }
    }

    public void WriteU64(ulong pa, ulong v) { Span<byte> b = stackalloc byte[8]; BitConverter.TryWriteBytes(b, v); Write(pa, b); }
    public void WriteU32(ulong pa, uint v) { Span<byte> b = stackalloc byte[4]; BitConverter.TryWriteBytes(b, v); Write(pa, b); }

    /// <summary>
    /// The page's decode cache, created on first use. The code-map byte is set and fenced before
    /// the caller reads instruction bytes, so a write that lands after the fence finds it set.
    /// </summary>
    internal CodePage GetOrCreateCodePage(ulong ppn)
    {
        var page = PageOrNull(ppn);
        if (page is not null) return page;
        CodeMap[ppn] = 1;
        Interlocked.MemoryBarrier();
        var fresh = new CodePage(ppn);
        var winner = Interlocked.CompareExchange(ref Slot(ppn), fresh, null) ?? fresh;
        // An invalidation may have run between setting the byte and publishing the page (it clears
        // the byte and finds no page to retire): set it again, so the published page is watched.
        // Its bytes are read only after this, so a write before it is seen by the decode.
        CodeMap[ppn] = 1;
        Interlocked.MemoryBarrier();
        return winner;
    }

    /// <summary>Called after a write to a page with decoded code: every vCPU re-decodes it at its next block boundary.</summary>
    internal void InvalidateCode(ulong ppn)
    {
        CodeMap[ppn] = 0;
        // No chunk yet: no page of it was ever published (one being created now re-sets the byte).
        var chunk = Volatile.Read(ref codePages[ppn >> ChunkBits]);
        var old = chunk is null ? null : Interlocked.Exchange(ref chunk[(int)(ppn & (ChunkSize - 1))], null);
        if (old is not null) old.Valid = false;
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        NativeMemory.Free(Base);
        NativeMemory.Free(CodeMap);
    }
}
