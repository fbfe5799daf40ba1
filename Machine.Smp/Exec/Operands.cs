using System.Runtime.CompilerServices;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;

namespace Harness.Smp;

// Register and memory operand access shared by every instruction family.
public unsafe partial class Vcpu
{
    /// <summary>Reads a register at a size known only at run time (the size types in Exec/Sizes.cs hold the semantics).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong GetReg(int r, int sizeLog) => sizeLog switch
    {
        3 => Exec.S64.Get(S, r),
        2 => Exec.S32.Get(S, r),
        1 => Exec.S16.Get(S, r),
        _ => Exec.S8.Get(S, r),
    };

    /// <summary>Writes a register with x86-64 semantics: 32-bit writes zero-extend, 8/16-bit writes merge.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetReg(int r, int sizeLog, ulong v)
    {
        switch (sizeLog)
        {
            case 3: Exec.S64.Set(S, r, v); break;
            case 2: Exec.S32.Set(S, r, v); break;
            case 1: Exec.S16.Set(S, r, v); break;
            default: Exec.S8.Set(S, r, v); break;
        }
    }

    /// <summary>Effective (linear) address of the instruction's memory operand.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Ea(ref Insn x)
    {
        ulong a = (ulong)x.Disp;
        if (x.MBase != Reg.None) a += S->Gpr[x.MBase];
        if (x.MIndex != Reg.None) a += S->Gpr[x.MIndex] << x.MScale;
        if ((x.Flags & InsnFlags.Addr32) != 0) a = (uint)a;
        if (x.MSeg != 0) a += x.MSeg == 1 ? S->FsBase : S->GsBase;
        return a;
    }

    /// <summary>Data load through a memory operand: a scheduling point when the seams are on.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Load(ulong ea, int sizeLog)
    {
        if (!Seams.Points) return Read(ea, sizeLog);
        Control.Point(this, PointKind.Load, ea);
        ulong v = Read(ea, sizeLog);
        Machine.Observer?.Access(this, ea, 1 << sizeLog, AccessKind.Read, v);
        return v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Store(ulong ea, int sizeLog, ulong v)
    {
        // The write stays the last call, as in a build without seams (see Data.Store).
        if (Seams.Points) { StoreAtPoint(ea, sizeLog, v); return; }
        Write(ea, sizeLog, v);
    }

    private void StoreAtPoint(ulong ea, int sizeLog, ulong v)
    {
        Control.Point(this, PointKind.Store, ea);
        Write(ea, sizeLog, v);
        Machine.Observer?.Access(this, ea, 1 << sizeLog, AccessKind.Write, v);
    }

    // Stack accesses of the running thread: no scheduling point (policy: the stack is the thread's
    // own); they fault as any data access does (#PF), the machine has no #SS for them.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Push64(ulong v)
    {
        ulong sp = S->Gpr[Reg.Rsp] - 8;
        Write64(sp, v);
        S->Gpr[Reg.Rsp] = sp;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Pop64()
    {
        ulong sp = S->Gpr[Reg.Rsp];
        ulong v = Read64(sp);
        S->Gpr[Reg.Rsp] = sp + 8;
        return v;
    }
}
