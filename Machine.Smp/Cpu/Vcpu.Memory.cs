using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;

namespace Harness.Smp;

public enum Access { Read = 0, Write = 1, Exec = 2 }

[StructLayout(LayoutKind.Sequential)]
internal struct TlbEntry
{
    /// <summary>(va >> 12) << 1 | user; ulong.MaxValue when empty.</summary>
    public ulong Tag;
    /// <summary>Host address of the page minus its guest virtual address: host = Addend + va.</summary>
    public long Addend;
    public ulong Ppn;
}

// Guest-virtual memory access. A per-vCPU software TLB per access kind caches the host address of
// a guest page, so the common access is a tag compare and a host load/store. Write entries exist
// only for pages whose dirty bit is already set, so the first write always walks and sets it.
public unsafe partial class Vcpu
{
    internal const int TlbBits = 9, TlbSize = 1 << TlbBits, TlbMask = TlbSize - 1;
    // tlbR and tlbW are what the fast paths read: the data TLBs, or under TSO an always-empty table,
    // so that every data access takes the slow path, where the store buffer is (the fast paths stay
    // the same code in every mode). dataR and dataW are the data TLBs themselves.
    private TlbEntry* tlbR, tlbW, tlbX, dataR, dataW;
    private TlbEntry[] tlbBlock = null!;
    private static readonly TlbEntry[] NoEntries = EmptyTlb();
    /// <summary>This vCPU's store buffer when the machine models x86-TSO (with the scheduling points on); null otherwise.</summary>
    public StoreBuffer? Tso { get; private set; }
    private byte* ram;
    private byte* codeMap;
    /// <summary>1 while CPL = 3: the low bit of every TLB tag, so user and supervisor entries never alias.</summary>
    internal ulong UserBit;

    private void InitMemory()
    {
        // Pinned, managed: freed with the vCPU (see the state's allocation in the constructor).
        tlbBlock = GC.AllocateArray<TlbEntry>(3 * TlbSize, pinned: true);
        dataR = (TlbEntry*)Unsafe.AsPointer(ref tlbBlock[0]);
        dataW = dataR + TlbSize;
        tlbX = dataW + TlbSize;
        tlbR = dataR;
        tlbW = dataW;
        ram = Mem.Base;
        codeMap = Mem.CodeMap;
        if (Machine.MemoryModel == MemoryModel.Tso)
        {
            Tso = new StoreBuffer(this);
            tlbR = tlbW = (TlbEntry*)Unsafe.AsPointer(ref NoEntries[0]);
        }
        FlushTlb();
    }

    private static TlbEntry[] EmptyTlb()
    {
        var a = GC.AllocateArray<TlbEntry>(TlbSize, pinned: true);
        for (int i = 0; i < a.Length; i++) a[i].Tag = ulong.MaxValue;
        return a;
    }

    /// <summary>
    /// Drains this vCPU's store buffer: a fence, a locked or a serializing instruction (SDM vol. 3
    /// 9.2.2 and 9.3). Compiled away unless the scheduling points are on, as TSO needs them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void DrainStores()
    {
        if (Seams.Points && Tso is { Count: > 0 } b) b.DrainAll();
    }

    public void FlushTlb()
    {
        for (int i = 0; i < 3 * TlbSize; i++) dataR[i].Tag = ulong.MaxValue;
        Array.Clear(l1);
    }

    public void FlushTlbPage(ulong va)
    {
        int i = (int)(va >> 12) & TlbMask;
        dataR[i].Tag = dataW[i].Tag = tlbX[i].Tag = ulong.MaxValue;
        // Decoded blocks are looked up by virtual address: drop every cached lookup (cheap, rare).
        Array.Clear(l1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong TagOf(ulong va) => (va >> 12 << 1) | UserBit;

    // ---- fast paths -------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    /// <summary>
    /// Runs a host agent's accesses through this (stopped) vCPU's page tables as supervisor accesses,
    /// whatever its CPL: the DBT reads kernel code and writes its per-CPU words while the vCPU is
    /// parked in user mode.
    /// </summary>
    public void AsSupervisor(Action access)
    {
        int cpl = Cpl;
        if (cpl == 0) { access(); return; }
        Cpl = 0;
        try { access(); }
        finally { Cpl = cpl; }
    }

    public byte Read8(ulong va)
    {
        ref var e = ref tlbR[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va)) return *(byte*)(e.Addend + (long)va);
        return (byte)ReadSlow(va, 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort Read16(ulong va)
    {
        ref var e = ref tlbR[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va) && (va & 0xFFF) <= 0xFFE) return *(ushort*)(e.Addend + (long)va);
        return (ushort)ReadSlow(va, 2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Read32(ulong va)
    {
        ref var e = ref tlbR[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va) && (va & 0xFFF) <= 0xFFC) return *(uint*)(e.Addend + (long)va);
        return (uint)ReadSlow(va, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Read64(ulong va)
    {
        ref var e = ref tlbR[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va) && (va & 0xFFF) <= 0xFF8) return *(ulong*)(e.Addend + (long)va);
        return ReadSlow(va, 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Read(ulong va, int sizeLog) => sizeLog switch
    {
        0 => Read8(va),
        1 => Read16(va),
        2 => Read32(va),
        _ => Read64(va),
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write8(ulong va, byte v)
    {
        ref var e = ref tlbW[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va)) { *(byte*)(e.Addend + (long)va) = v; if (codeMap[e.Ppn] != 0) CodeWritten(e.Ppn); return; }
        WriteSlow(va, 1, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write16(ulong va, ushort v)
    {
        ref var e = ref tlbW[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va) && (va & 0xFFF) <= 0xFFE) { *(ushort*)(e.Addend + (long)va) = v; if (codeMap[e.Ppn] != 0) CodeWritten(e.Ppn); return; }
        WriteSlow(va, 2, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write32(ulong va, uint v)
    {
        ref var e = ref tlbW[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va) && (va & 0xFFF) <= 0xFFC) { *(uint*)(e.Addend + (long)va) = v; if (codeMap[e.Ppn] != 0) CodeWritten(e.Ppn); return; }
        WriteSlow(va, 4, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write64(ulong va, ulong v)
    {
        ref var e = ref tlbW[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va) && (va & 0xFFF) <= 0xFF8) { *(ulong*)(e.Addend + (long)va) = v; if (codeMap[e.Ppn] != 0) CodeWritten(e.Ppn); return; }
        WriteSlow(va, 8, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(ulong va, int sizeLog, ulong v)
    {
        switch (sizeLog)
        {
            case 0: Write8(va, (byte)v); break;
            case 1: Write16(va, (ushort)v); break;
            case 2: Write32(va, (uint)v); break;
            default: Write64(va, v); break;
        }
    }

    /// <summary>A write hit a page with decoded code: invalidate it and end the current block.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void CodeWritten(ulong ppn)
    {
        Mem.InvalidateCode(ppn);
        BreakBlock = true;
    }

    // ---- slow paths -------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong ReadSlow(ulong va, int size)
    {
        // Under TSO every data access comes here (the fast paths see an empty TLB): the owner's
        // buffered bytes lie over memory's.
        var sb = Seams.Points ? Tso : null;
        if (((va & 0xFFF) + (ulong)size) <= 0x1000) return ReadAt(TranslateData(va, Access.Read), size, sb);
        // Crosses a page: translate both pages first, so a fault leaves nothing half done.
        ulong lo = TranslateData(va, Access.Read);
        ulong hi = TranslateData((va | 0xFFF) + 1, Access.Read);
        int n1 = (int)(0x1000 - (va & 0xFFF));
        ulong v = 0;
        for (int i = 0; i < size; i++)
            v |= (ulong)(byte)ReadAt(i < n1 ? lo + (ulong)i : hi + (ulong)(i - n1), 1, sb) << (8 * i);
        return v;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteSlow(ulong va, int size, ulong v)
    {
        var sb = Seams.Points ? Tso : null;
        if (((va & 0xFFF) + (ulong)size) <= 0x1000)
        {
            WriteAt(TranslateData(va, Access.Write), size, v, sb);
            return;
        }
        ulong lo = TranslateData(va, Access.Write);
        ulong hi = TranslateData((va | 0xFFF) + 1, Access.Write);
        int n1 = (int)(0x1000 - (va & 0xFFF));
        for (int i = 0; i < size; i++)
            WriteAt(i < n1 ? lo + (ulong)i : hi + (ulong)(i - n1), 1, (byte)(v >> (8 * i)), sb);
    }

    /// <summary>The data TLB's translation, or a page walk (which fills it).</summary>
    private ulong TranslateData(ulong va, Access access)
    {
        ref var e = ref (access == Access.Write ? dataW : dataR)[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va)) return (e.Ppn << 12) | (va & 0xFFF);
        return ToPhysical(va, access);
    }

    private ulong ReadAt(ulong pa, int size, StoreBuffer? sb)
    {
        ulong v = ReadPhys(pa, size);
        return sb is not null && Mem.InRam(pa, (ulong)size) ? sb.Forward(pa, size, v) : v;
    }

    private void WriteAt(ulong pa, int size, ulong v, StoreBuffer? sb)
    {
        if (sb is null) WritePhys(pa, size, v);
        else BufferStore(pa, size, v, sb);
    }

    private void BufferStore(ulong pa, int size, ulong v, StoreBuffer sb)
    {
        if (!Mem.InRam(pa, (ulong)size)) return;
        // A store to a page with decoded code is not buffered: the buffer drains and the store goes
        // to memory, so this vCPU's next fetch sees it (self-modifying code stays coherent on its
        // own CPU, as the SDM requires); a stronger order than TSO, for stores nobody races on.
        if (codeMap[pa >> 12] != 0)
        {
            sb.DrainAll();
            WritePhys(pa, size, v);
            return;
        }
        sb.Add(pa, size, v, Now);
    }

    internal ulong ReadPhys(ulong pa, int size)
    {
        if (!Mem.InRam(pa, (ulong)size)) return size == 8 ? ulong.MaxValue : (1UL << (8 * size)) - 1;
        byte* p = ram + pa;
        return size switch { 1 => *p, 2 => *(ushort*)p, 4 => *(uint*)p, _ => *(ulong*)p };
    }

    internal void WritePhys(ulong pa, int size, ulong v)
    {
        if (!Mem.InRam(pa, (ulong)size)) return;
        byte* p = ram + pa;
        switch (size)
        {
            case 1: *p = (byte)v; break;
            case 2: *(ushort*)p = (ushort)v; break;
            case 4: *(uint*)p = (uint)v; break;
            default: *(ulong*)p = v; break;
        }
        if (codeMap[pa >> 12] != 0) CodeWritten(pa >> 12);
    }

    /// <summary>
    /// Host pointer for a locked read-modify-write of `size` bytes at va, checked for write
    /// permission. Null when the access crosses a page or leaves RAM: the caller then takes the
    /// machine's split-lock path.
    /// </summary>
    internal byte* HostForRmw(ulong va, int size)
    {
        // A locked access drains the store buffer first (SDM vol. 3 9.2.2).
        DrainStores();
        ulong pa = ToPhysical(va, Access.Write);
        if (((va & 0xFFF) + (ulong)size) > 0x1000) { ToPhysical((va | 0xFFF) + 1, Access.Write); return null; }
        if (!Mem.InRam(pa, (ulong)size)) return null;
        return ram + pa;
    }

    /// <summary>Marks a page written through a host pointer (locked ops): code invalidation.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void AfterHostWrite(byte* host)
    {
        ulong ppn = (ulong)(host - ram) >> 12;
        if (codeMap[ppn] != 0) CodeWritten(ppn);
    }

    // ---- page walk --------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsCanonical(ulong va) => ((long)va << 16 >> 16) == (long)va;

    /// <summary>Walks the 4-level page tables for va, checks permissions, sets accessed/dirty bits, fills the TLB.</summary>
    public ulong ToPhysical(ulong va, Access access)
    {
        Mem.ThrowIfDisposed();
        if (!IsCanonical(va)) throw GuestFault.Gp(0);
        bool user = UserBit != 0;
        bool write = access == Access.Write;
        const ulong P = 1, RW = 2, US = 4, A = 0x20, D = 0x40, PS = 0x80, NX = 1UL << 63;
        const ulong AddrMask = 0x000F_FFFF_FFFF_F000;
        ulong table = S->Cr3 & AddrMask;
        bool writable = true, userOk = true, nx = false;
        ulong pa = 0;
        for (int level = 3; level >= 0; level--)
        {
            ulong entryPa = table + ((va >> (12 + 9 * level)) & 511) * 8;
            ulong e = Mem.InRam(entryPa, 8) ? *(ulong*)(ram + entryPa) : 0;
            if ((e & P) == 0) throw PageFault(va, present: false, write, user, access == Access.Exec);
            writable &= (e & RW) != 0;
            userOk &= (e & US) != 0;
            nx |= (e & NX) != 0;
            bool leaf = level == 0 || (level <= 2 && level >= 1 && (e & PS) != 0);
            // Permission checks happen before any accessed/dirty update, as on hardware.
            if (leaf)
            {
                bool nxOn = (S->Efer & EferBits.NXE) != 0;
                if (user && !userOk) throw PageFault(va, present: true, write, user, access == Access.Exec);
                if (write && !writable && (user || (S->Cr0 & Cr0Bits.WP) != 0))
                    throw PageFault(va, present: true, write, user, access == Access.Exec);
                if (access == Access.Exec && nx && nxOn) throw PageFault(va, present: true, write, user, true);
                ulong set = A | (write ? D : 0);
                if ((e & set) != set) Interlocked.Or(ref *(ulong*)(ram + entryPa), set);
                ulong pageMask = (1UL << (12 + 9 * level)) - 1;
                pa = ((e & AddrMask) & ~pageMask) | (va & pageMask);
                bool dirty = write || (e & D) != 0;
                bool canWrite = writable || (!user && (S->Cr0 & Cr0Bits.WP) == 0);
                Fill(va, pa, canWrite, dirty, canExec: !(nx && nxOn));
                return pa;
            }
            if ((e & A) == 0) Interlocked.Or(ref *(ulong*)(ram + entryPa), A);
            table = e & AddrMask;
        }
        return pa;
    }

    private void Fill(ulong va, ulong pa, bool canWrite, bool dirty, bool canExec)
    {
        ulong ppn = pa >> 12;
        if (!Mem.InRam(ppn << 12, 4096)) return; // outside RAM: always take the slow path
        int i = (int)(va >> 12) & TlbMask;
        ulong tag = TagOf(va);
        long addend = (long)(ram + (ppn << 12)) - (long)(va & ~0xFFFUL);
        dataR[i] = new TlbEntry { Tag = tag, Addend = addend, Ppn = ppn };
        if (canWrite && dirty) dataW[i] = new TlbEntry { Tag = tag, Addend = addend, Ppn = ppn };
        if (canExec) tlbX[i] = new TlbEntry { Tag = tag, Addend = addend, Ppn = ppn };
    }

    /// <summary>
    /// va's physical address from the data TLB, without a page walk or any other side effect; false
    /// when it is not cached (an observer of an access that just happened finds it there, unless
    /// it lies outside RAM, which is never cached).
    /// </summary>
    public bool TryCachedPhysical(ulong va, out ulong pa)
    {
        int i = (int)(va >> 12) & TlbMask;
        ulong tag = TagOf(va);
        if (dataR[i].Tag == tag) { pa = (dataR[i].Ppn << 12) | (va & 0xFFF); return true; }
        if (dataW[i].Tag == tag) { pa = (dataW[i].Ppn << 12) | (va & 0xFFF); return true; }
        pa = 0;
        return false;
    }

    /// <summary>Physical address of an instruction fetch at va (exec permission checked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong TranslateFetch(ulong va)
    {
        ref var e = ref tlbX[(int)(va >> 12) & TlbMask];
        if (e.Tag == TagOf(va)) return (e.Ppn << 12) | (va & 0xFFF);
        return ToPhysical(va, Access.Exec);
    }

    // The I/D bit is reported only when execute-disable is enabled (SDM 4.7; SMEP is not modelled).
    private GuestFault PageFault(ulong va, bool present, bool write, bool user, bool fetch) =>
        new(Vectors.PF, (present ? 1u : 0) | (write ? 2u : 0) | (user ? 4u : 0) | (fetch && (S->Efer & EferBits.NXE) != 0 ? 16u : 0), va);
}
