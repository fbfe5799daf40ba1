using System.Runtime.CompilerServices;
using Harness.Smp.Decode;

namespace Harness.Smp;

// What compiled blocks (Compile/BlockEmitter.cs) call: the slow paths with the faulting
// instruction recorded first, so a fault from compiled code is delivered at the right instruction
// exactly as from the interpreter (Run's catch reads curInsn), and the code-write notice.
public unsafe partial class Vcpu
{
    // The slow paths take the compiled code's flag record along and store it first: a fault there
    // pushes RFLAGS. (Passing it costs the call a few arguments; storing it at every call site
    // made the IL, and the runtime's time to compile it, much larger.)
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal ulong ReadSlowAt(ulong va, int size, Insn* at, Insn* start, int op, int log, ulong res, ulong s1, ulong s2, ulong cf)
    {
        StoreFlagRecord(op, log, res, s1, s2, cf);
        curInsn = at;
        blockStart = start;
        return ReadSlow(va, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void WriteSlowAt(ulong va, int size, ulong v, Insn* at, Insn* start, int op, int log, ulong res, ulong s1, ulong s2, ulong cf)
    {
        StoreFlagRecord(op, log, res, s1, s2, cf);
        curInsn = at;
        blockStart = start;
        WriteSlow(va, size, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void StoreFlagRecord(int op, int log, ulong res, ulong s1, ulong s2, ulong cf)
    {
        var s = S;
        s->LazyOp = op;
        s->LazySize = log;
        s->LazyRes = res;
        s->LazySrc1 = s1;
        s->LazySrc2 = s2;
        s->LazyCfIn = cf;
    }

    /// <summary>A fast-path store of compiled code hit a page with decoded code.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void CodeWrittenAt(ulong ppn) => CodeWritten(ppn);
}
