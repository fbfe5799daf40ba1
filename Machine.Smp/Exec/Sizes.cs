using System.Runtime.CompilerServices;
using Harness.Smp.Control;
using Harness.Smp.Cpu;

namespace Harness.Smp.Exec;

// Operand sizes as types. A handler written once as Handler<Op, Z> is compiled by the JIT into one
// switch-free body per size (struct type arguments are never shared), so the specialized fast path
// and the generic definition are the same code. Vcpu.GetReg/SetReg (size known only at run time)
// dispatch to these.

internal unsafe interface ISize
{
    static abstract int Log { get; }
    static abstract ulong Get(CpuState* s, int r);
    static abstract void Set(CpuState* s, int r, ulong v);
    static abstract ulong Read(Vcpu c, ulong ea);
    static abstract void Write(Vcpu c, ulong ea, ulong v);
}

internal unsafe struct S8 : ISize
{
    public static int Log => 0;
    // Register numbers from Reg.HighByteBase up name AH, CH, DH, BH.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Get(CpuState* s, int r) => r >= Reg.HighByteBase ? (byte)(s->Gpr[r - Reg.HighByteBase] >> 8) : (byte)s->Gpr[r];
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(CpuState* s, int r, ulong v)
    {
        if (r >= Reg.HighByteBase) *((byte*)&s->Gpr[r - Reg.HighByteBase] + 1) = (byte)v;
        else *(byte*)&s->Gpr[r] = (byte)v;
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Read(Vcpu c, ulong ea) => c.Read8(ea);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Write(Vcpu c, ulong ea, ulong v) => c.Write8(ea, (byte)v);
}

internal unsafe struct S16 : ISize
{
    public static int Log => 1;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Get(CpuState* s, int r) => (ushort)s->Gpr[r];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Set(CpuState* s, int r, ulong v) => *(ushort*)&s->Gpr[r] = (ushort)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Read(Vcpu c, ulong ea) => c.Read16(ea);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Write(Vcpu c, ulong ea, ulong v) => c.Write16(ea, (ushort)v);
}

internal unsafe struct S32 : ISize
{
    public static int Log => 2;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Get(CpuState* s, int r) => (uint)s->Gpr[r];
    // A 32-bit register write zero-extends into the whole register.
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Set(CpuState* s, int r, ulong v) => s->Gpr[r] = (uint)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Read(Vcpu c, ulong ea) => c.Read32(ea);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Write(Vcpu c, ulong ea, ulong v) => c.Write32(ea, (uint)v);
}

internal unsafe struct S64 : ISize
{
    public static int Log => 3;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Get(CpuState* s, int r) => s->Gpr[r];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Set(CpuState* s, int r, ulong v) => s->Gpr[r] = v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Read(Vcpu c, ulong ea) => c.Read64(ea);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Write(Vcpu c, ulong ea, ulong v) => c.Write64(ea, v);
}

/// <summary>Data accesses through a memory operand at a static size: a scheduling point when the seams are on (as Vcpu.Load/Store).</summary>
internal static class Data
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Load<Z>(Vcpu c, ulong ea) where Z : struct, ISize
    {
        if (!Seams.Points) return Z.Read(c, ea);
        c.Control.Point(c, PointKind.Load, ea);
        ulong v = Z.Read(c, ea);
        c.Machine.Observer?.Access(c, ea, 1 << Z.Log, AccessKind.Read, v);
        return v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store<Z>(Vcpu c, ulong ea, ulong v) where Z : struct, ISize
    {
        // The write stays the last call (a tail call, as in a build without seams): anything after
        // it, even folded away, would change the free-running code (benchmarks/seams-codegen.sh).
        if (Seams.Points) { StoreAtPoint<Z>(c, ea, v); return; }
        Z.Write(c, ea, v);
    }

    /// <summary>The controlled modes' store: the scheduling point before it, the access observer after.</summary>
    private static void StoreAtPoint<Z>(Vcpu c, ulong ea, ulong v) where Z : struct, ISize
    {
        c.Control.Point(c, PointKind.Store, ea);
        Z.Write(c, ea, v);
        c.Machine.Observer?.Access(c, ea, 1 << Z.Log, AccessKind.Write, v);
    }
}
