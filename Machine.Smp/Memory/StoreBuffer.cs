using System.Runtime.CompilerServices;

namespace Harness.Smp.Memory;

/// <summary>Which memory model the controlled executions give the guest.</summary>
public enum MemoryModel
{
    /// <summary>Every store is visible to every vCPU at once (sequential consistency under the single-threaded controls).</summary>
    Sc,
    /// <summary>
    /// x86-TSO (Sewell et al., CACM 2010; SDM vol. 3 "Memory Ordering"): each vCPU's stores wait in a
    /// FIFO store buffer, its own loads read them first, and the execution control decides when
    /// each buffer drains. Only for the deterministic and Coyote controls: free-running vCPUs run
    /// on the host's own TSO and the machine models nothing.
    /// </summary>
    Tso,
}

/// <summary>
/// One vCPU's store buffer under <see cref="MemoryModel.Tso"/>: the physical address, size and
/// value of stores not yet in memory, oldest first. Loads of the owner merge the buffered bytes
/// over memory byte by byte, newest last, so partially overlapping and mixed-size accesses read
/// what the owner wrote (as store forwarding, or the stall that waits for it, gives on hardware).
/// Touched only by the thread that runs the owner, or by a single-threaded control between
/// instructions.
/// </summary>
public sealed class StoreBuffer
{
    /// <summary>Entries held before a store must first drain the oldest (hardware has a few dozen).</summary>
    public const int Capacity = 32;

    public readonly record struct Entry(ulong Pa, byte Size, ulong Value, long Stamp);

    private readonly Entry[] ring = new Entry[Capacity];
    private int head, count;
    private readonly Vcpu owner;

    internal StoreBuffer(Vcpu owner) => this.owner = owner;

    public int Count => count;

    /// <summary>The owner's guest time when the oldest buffered store executed (long.MaxValue when empty).</summary>
    public long OldestStamp => count == 0 ? long.MaxValue : ring[head].Stamp;

    /// <summary>Buffered stores drained to memory since the machine started (a statistic).</summary>
    public long Drained { get; private set; }

    /// <summary>The buffered stores, oldest first.</summary>
    public IEnumerable<Entry> Entries
    {
        get
        {
            for (int i = 0; i < count; i++) yield return ring[(head + i) % Capacity];
        }
    }

    /// <summary>Buffers a store of size bytes (1..8, inside one page of RAM); a full buffer first drains its oldest.</summary>
    internal void Add(ulong pa, int size, ulong value, long stamp)
    {
        if (count == Capacity) DrainOne();
        ring[(head + count) % Capacity] = new Entry(pa, (byte)size, value, stamp);
        count++;
    }

    /// <summary>Writes the oldest buffered store to memory; false when the buffer is empty.</summary>
    public bool DrainOne()
    {
        if (count == 0) return false;
        var e = ring[head];
        head = (head + 1) % Capacity;
        count--;
        Drained++;
        // The store reaches memory now (and a page with decoded code is invalidated now).
        owner.WritePhys(e.Pa, e.Size, e.Value);
        return true;
    }

    /// <summary>Drains every buffered store, oldest first (a fence, a locked or serializing instruction).</summary>
    public void DrainAll()
    {
        while (DrainOne()) { }
    }

    /// <summary>Whether a buffered store writes into physical page ppn (or the page after it: an instruction may straddle).</summary>
    public bool Touches(ulong ppn)
    {
        for (int i = 0; i < count; i++)
        {
            ulong p = ring[(head + i) % Capacity].Pa >> 12;
            if (p == ppn || p == ppn + 1) return true;
        }
        return false;
    }

    /// <summary>Drains the stores the owner made before guest time `stamp`.</summary>
    public void DrainOlderThan(long stamp)
    {
        while (count > 0 && ring[head].Stamp < stamp) DrainOne();
    }

    /// <summary>The value of size bytes at pa as the owner sees it: memory's value v with the buffered bytes over it, newest last.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Forward(ulong pa, int size, ulong v)
    {
        if (count == 0) return v;
        return ForwardSlow(pa, size, v);
    }

    private ulong ForwardSlow(ulong pa, int size, ulong v)
    {
        ulong end = pa + (ulong)size;
        for (int i = 0; i < count; i++)
        {
            ref var e = ref ring[(head + i) % Capacity];
            ulong eEnd = e.Pa + e.Size;
            if (e.Pa >= end || eEnd <= pa) continue;
            // Overlay the overlapping bytes of the entry onto v.
            ulong from = Math.Max(pa, e.Pa), to = Math.Min(end, eEnd);
            for (ulong b = from; b < to; b++)
            {
                int at = (int)(b - pa) * 8, src = (int)(b - e.Pa) * 8;
                v = (v & ~(0xFFUL << at)) | (((e.Value >> src) & 0xFF) << at);
            }
        }
        return v;
    }

    /// <summary>The buffer's contents, for a host that explores states itself (the litmus runner).</summary>
    public Entry[] Save()
    {
        var a = new Entry[count];
        for (int i = 0; i < count; i++) a[i] = ring[(head + i) % Capacity];
        return a;
    }

    /// <summary>Replaces the contents with a <see cref="Save"/>d list (nothing is written to memory).</summary>
    public void Load(ReadOnlySpan<Entry> entries)
    {
        if (entries.Length > Capacity) throw new ArgumentException($"at most {Capacity} entries");
        head = 0;
        count = entries.Length;
        entries.CopyTo(ring);
    }
}
