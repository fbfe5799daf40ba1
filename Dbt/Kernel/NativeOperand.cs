using Harness.Smp;
using Iced.Intel;

namespace Harness.Dbt.Kernel;

/// <summary>Effective addresses of a native instruction's memory operand, from a vCPU's registers (for call-outs).</summary>
internal static unsafe class NativeOperand
{
    /// <summary>The linear address of ins's memory operand, with nativeRsp standing for RSP.</summary>
    public static ulong Address(Vcpu v, in Instruction ins, ulong nativeRsp)
    {
        ulong a;
        if (ins.IsIPRelativeMemoryOperand) a = ins.IPRelativeMemoryAddress;
        else
        {
            a = ins.MemoryDisplacement64;
            if (ins.MemoryBase != Register.None) a += Value(v, ins.MemoryBase, nativeRsp);
            if (ins.MemoryIndex != Register.None) a += Value(v, ins.MemoryIndex, nativeRsp) * (ulong)ins.MemoryIndexScale;
            if (ins.MemoryDisplSize == 4 && ins.MemoryBase.GetSize() == 4) a = (uint)a;
        }
        return ins.MemorySegment switch
        {
            Register.FS => a + v.S->FsBase,
            Register.GS => a + v.S->GsBase,
            _ => a,
        };
    }

    private static ulong Value(Vcpu v, Register r, ulong nativeRsp)
    {
        var full = r.GetFullRegister();
        if (full == Register.RSP) return nativeRsp;
        if (full < Register.RAX || full > Register.R15)
            throw new InvalidOperationException($"unsupported address register {r}");
        ulong x = v.Gpr(full - Register.RAX);
        return r.GetSize() == 4 ? (uint)x : x;
    }
}
