using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>
/// Locked read-modify-writes (lock-prefixed ALU ops, xchg with memory, xadd, cmpxchg,
/// cmpxchg8b/16b). They run as host compare-and-swap loops on the guest page's host address, so
/// they are atomic against every other vCPU thread; accesses that cross a page take the
/// machine's split-lock instead (as a split lock does on hardware, slowly).
/// </summary>
internal static unsafe class Atomics
{
    public static void Install()
    {
        // Without lock the memory forms are a plain load and store, as on hardware: not atomic across
        // vCPUs, no fence (under TSO the store is buffered like any other).
        OpTable.Add(Mnemonic.Xadd, new FormMap().On(Form.RR, &XaddRR).On(Form.MR, &XaddPlain).Locked(Form.MR, &XaddM));
        OpTable.Add(Mnemonic.Cmpxchg, new FormMap().On(Form.RR, &CmpxchgRR).On(Form.MR, &CmpxchgPlain).Locked(Form.MR, &CmpxchgM));
        OpTable.Add(Mnemonic.Cmpxchg16b, &BuildCmpxchgDouble);
        OpTable.Add(Mnemonic.Cmpxchg8b, &BuildCmpxchgDouble);
    }

    /// <summary>
    /// Atomically replaces the value at ea with f(old, operand); returns old. f may record flags: they are
    /// rolled back before each retry, so the flags seen afterwards are those of the winning attempt.
    /// </summary>
    public static ulong Rmw(Vcpu c, ref Insn x, ulong ea, delegate*<Vcpu, ref Insn, ulong, ulong, ulong> f, ulong operand)
    {
        c.Point(PointKind.Atomic, ea);
        int log = x.SizeLog;
        byte* p = c.HostForRmw(ea, 1 << log);
        if (p == null)
        {
            lock (c.Machine.SplitLock)
            {
                ulong o = c.Read(ea, log);
                c.Write(ea, log, f(c, ref x, o, operand));
                c.DrainStores(); // the locked store is not buffered
                if (Seams.Points) c.Machine.Observer?.Access(c, ea, 1 << log, AccessKind.Atomic, o);
                return o;
            }
        }
        var flags = c.SaveFlags();
        while (true)
        {
            ulong old = log switch
            {
                0 => Volatile.Read(ref *p),
                1 => Volatile.Read(ref *(ushort*)p),
                2 => Volatile.Read(ref *(uint*)p),
                _ => Volatile.Read(ref *(ulong*)p),
            };
            ulong nv = f(c, ref x, old, operand);
            bool ok = log switch
            {
                0 => Interlocked.CompareExchange(ref *p, (byte)nv, (byte)old) == (byte)old,
                1 => Interlocked.CompareExchange(ref *(ushort*)p, (ushort)nv, (ushort)old) == (ushort)old,
                2 => Interlocked.CompareExchange(ref *(uint*)p, (uint)nv, (uint)old) == (uint)old,
                _ => Interlocked.CompareExchange(ref *(ulong*)p, nv, old) == old,
            };
            if (ok)
            {
                c.AfterHostWrite(p);
                if (Seams.Points) c.Machine.Observer?.Access(c, ea, 1 << log, AccessKind.Atomic, old);
                return old;
            }
            c.RestoreFlags(flags);
        }
    }

    private static void XaddRR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong d = c.GetReg(x.R0, log), s = c.GetReg(x.R1, log);
        ulong sum = AddOp.Do(c, log, d, s);
        c.SetReg(x.R1, log, d);
        c.SetReg(x.R0, log, sum);
    }

    private static ulong XaddNew(Vcpu c, ref Insn x, ulong old, ulong _) => AddOp.Do(c, x.SizeLog, old, c.GetReg(x.R0, x.SizeLog));

    private static void XaddM(Vcpu c, ref Insn x)
    {
        ulong old = Rmw(c, ref x, c.Ea(ref x), &XaddNew, 0);
        c.SetReg(x.R0, x.SizeLog, old);
    }

    /// <summary>
    /// Checks that the destination can be written before an unlocked read-modify-write changes any
    /// state (flags, registers): its store then cannot fault, and a fault stays precise.
    /// </summary>
    private static void ProbeWrite(Vcpu c, ulong ea, int size)
    {
        c.ToPhysical(ea, Access.Write);
        if (((ea & 0xFFF) + (ulong)size) > 0x1000) c.ToPhysical((ea | 0xFFF) + 1, Access.Write);
    }

    private static void XaddPlain(Vcpu c, ref Insn x)
    {
        ulong ea = c.Ea(ref x);
        int log = x.SizeLog;
        ProbeWrite(c, ea, 1 << log);
        ulong old = c.Load(ea, log);
        c.Store(ea, log, AddOp.Do(c, log, old, c.GetReg(x.R0, log)));
        c.SetReg(x.R0, log, old);
    }

    private static void CmpxchgPlain(Vcpu c, ref Insn x)
    {
        ulong ea = c.Ea(ref x);
        int log = x.SizeLog;
        ProbeWrite(c, ea, 1 << log);
        ulong old = c.Load(ea, log);
        c.Store(ea, log, CmpxchgNew(c, ref x, old, 0));
        if (((c.GetReg(Reg.Rax, log) ^ old) & Vcpu.SizeMask(log)) != 0) c.SetReg(Reg.Rax, log, old);
    }

    private static void CmpxchgRR(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong acc = c.GetReg(Reg.Rax, log), d = c.GetReg(x.R0, log);
        CmpOp.Do(c, log, acc, d);
        if (((acc ^ d) & Vcpu.SizeMask(log)) == 0) c.SetReg(x.R0, log, c.GetReg(x.R1, log));
        else c.SetReg(Reg.Rax, log, d);
    }

    private static ulong CmpxchgNew(Vcpu c, ref Insn x, ulong old, ulong _)
    {
        int log = x.SizeLog;
        ulong acc = c.GetReg(Reg.Rax, log);
        CmpOp.Do(c, log, acc, old);
        // On failure the processor writes the old value back: same bits, still a locked write.
        return ((acc ^ old) & Vcpu.SizeMask(log)) == 0 ? c.GetReg(x.R0, log) : old;
    }

    private static void CmpxchgM(Vcpu c, ref Insn x)
    {
        int log = x.SizeLog;
        ulong old = Rmw(c, ref x, c.Ea(ref x), &CmpxchgNew, 0);
        if (((c.GetReg(Reg.Rax, log) ^ old) & Vcpu.SizeMask(log)) != 0) c.SetReg(Reg.Rax, log, old);
    }

    private static bool BuildCmpxchgDouble(ref Insn x, in Instruction ins)
    {
        if (!x.Has(InsnFlags.MemOperand)) return false;
        x.Size = (byte)ins.MemorySize.GetSize(); // 8 or 16
        x.Exec = x.Size == 16 ? &Cmpxchg16b : &Cmpxchg8b;
        return true;
    }

    private static void Cmpxchg8b(Vcpu c, ref Insn x)
    {
        ulong ea = c.Ea(ref x);
        ulong expected = (uint)c.S->Gpr[Reg.Rax] | (ulong)(uint)c.S->Gpr[Reg.Rdx] << 32;
        ulong desired = (uint)c.S->Gpr[Reg.Rbx] | (ulong)(uint)c.S->Gpr[Reg.Rcx] << 32;
        ulong old;
        if (!x.Has(InsnFlags.Lock))
        {
            // Unlocked: a plain load and store (the processor writes the old value back on failure).
            ProbeWrite(c, ea, 8);
            old = c.Load(ea, 3);
            c.Store(ea, 3, old == expected ? desired : old);
            Cmpxchg8bResult(c, old, expected);
            return;
        }
        c.Point(PointKind.Atomic, ea);
        byte* p = c.HostForRmw(ea, 8);
        if (p == null) lock (c.Machine.SplitLock) { old = c.Read64(ea); c.Write64(ea, old == expected ? desired : old); c.DrainStores(); }
        else { old = Interlocked.CompareExchange(ref *(ulong*)p, desired, expected); c.AfterHostWrite(p); }
        if (Seams.Points) c.Machine.Observer?.Access(c, ea, 8, AccessKind.Atomic, old);
        Cmpxchg8bResult(c, old, expected);
    }

    private static void Cmpxchg8bResult(Vcpu c, ulong old, ulong expected)
    {
        bool eq = old == expected;
        c.SetArith(Rflags.ZF, eq ? Rflags.ZF : 0);
        if (!eq) { c.S->Gpr[Reg.Rax] = (uint)old; c.S->Gpr[Reg.Rdx] = old >> 32; }
    }

    private static void Cmpxchg16b(Vcpu c, ref Insn x)
    {
        ulong ea = c.Ea(ref x);
        if ((ea & 15) != 0) throw GuestFault.Gp(0);
        var s = c.S;
        UInt128 expected = new(s->Gpr[Reg.Rdx], s->Gpr[Reg.Rax]);
        UInt128 desired = new(s->Gpr[Reg.Rcx], s->Gpr[Reg.Rbx]);
        UInt128 old;
        if (!x.Has(InsnFlags.Lock))
        {
            ProbeWrite(c, ea, 16);
            ulong lo = c.Load(ea, 3), hi = c.Load(ea + 8, 3);
            old = new UInt128(hi, lo);
            var write = old == expected ? desired : old;
            c.Store(ea, 3, (ulong)write);
            c.Store(ea + 8, 3, (ulong)(write >> 64));
        }
        else
        {
            c.Point(PointKind.Atomic, ea);
            byte* p = c.HostForRmw(ea, 16);
            // .NET has no 128-bit CAS; the machine-wide split lock serializes every cmpxchg16b against
            // each other. Plain 8-byte stores by other vCPUs can still interleave, which is acceptable:
            // guests that mix cmpxchg16b with plain stores to the same pair race on hardware too.
            lock (c.Machine.SplitLock)
            {
                ulong lo = c.Read64(ea), hi = c.Read64(ea + 8);
                old = new UInt128(hi, lo);
                if (old == expected) { c.Write64(ea, (ulong)desired); c.Write64(ea + 8, (ulong)(desired >> 64)); }
                else { c.Write64(ea, lo); c.Write64(ea + 8, hi); }
                c.DrainStores();
            }
            if (Seams.Points) c.Machine.Observer?.Access(c, ea, 16, AccessKind.Atomic, (ulong)old);
        }
        bool eq = old == expected;
        c.SetArith(Rflags.ZF, eq ? Rflags.ZF : 0);
        if (!eq) { s->Gpr[Reg.Rax] = (ulong)old; s->Gpr[Reg.Rdx] = (ulong)(old >> 64); }
    }
}
