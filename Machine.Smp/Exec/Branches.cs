using System.Runtime.CompilerServices;
using Harness.Smp.Cpu;
using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Exec;

/// <summary>jmp jcc call ret (near), jrcxz/jecxz, loop/loope/loopne. Every handler sets RIP.</summary>
internal static unsafe class Branches
{
    public static void Install()
    {
        OpTable.Add(Mnemonic.Jmp, &BuildJmp, 0, OpFlow.Branch);
        OpTable.Add(Mnemonic.Call, &BuildCall, 0, OpFlow.Branch);
        OpTable.Add(Mnemonic.Ret, &BuildRet, 0, OpFlow.Branch);
        var jcc = JccTable();
        for (byte cc = 0; cc < 16; cc++) OpTable.Add(jcc[cc].M, (delegate*<Vcpu, ref Insn, void>)jcc[cc].Exec, OpFlow.Branch, sub: cc);
        OpTable.Add(Mnemonic.Jrcxz, &BuildLoop, 0, OpFlow.Branch);
        OpTable.Add(Mnemonic.Jecxz, &BuildLoop, 1, OpFlow.Branch);
        OpTable.Add(Mnemonic.Loop, &BuildLoop, 2, OpFlow.Branch);
        OpTable.Add(Mnemonic.Loope, &BuildLoop, 3, OpFlow.Branch);
        OpTable.Add(Mnemonic.Loopne, &BuildLoop, 4, OpFlow.Branch);
    }

    private static bool IsNear(in Instruction ins) => ins.GetOpKind(0) is OpKind.NearBranch64 or OpKind.NearBranch32 or OpKind.NearBranch16;

    private static bool BuildJmp(ref Insn x, in Instruction ins)
    {
        if (IsNear(ins)) x.Exec = &JmpRel;
        else if (ins.GetOpKind(0) == OpKind.Register) x.Exec = &JmpR;
        else if (ins.GetOpKind(0) == OpKind.Memory && x.Size == 8) x.Exec = &JmpM;
        else return false; // far jumps
        return true;
    }

    internal static void JmpRel(Vcpu c, ref Insn x) => c.S->Rip = x.Imm;
    internal static void JmpR(Vcpu c, ref Insn x) => c.S->Rip = c.S->Gpr[x.R0];
    private static void JmpM(Vcpu c, ref Insn x) => c.S->Rip = c.Load(c.Ea(ref x), 3);

    // In condition-code order. The unsigned compares and equality (what loop bounds and pointer
    // checks compile to) have their own handlers that read the lazy record directly; the rest evaluate x.Sub.
    /// <summary>The conditional jumps, in condition-code order (the block compiler gives each its rule).</summary>
    internal static IEnumerable<Mnemonic> ConditionalJumps => JccTable().Select(j => j.M);

    private static (Mnemonic M, nint Exec)[] JccTable()
    {
        nint any = (nint)(delegate*<Vcpu, ref Insn, void>)&JccAny;
        return
        [
            (Mnemonic.Jo, any), (Mnemonic.Jno, any),
            (Mnemonic.Jb, (nint)(delegate*<Vcpu, ref Insn, void>)&Jb), (Mnemonic.Jae, (nint)(delegate*<Vcpu, ref Insn, void>)&Jae),
            (Mnemonic.Je, (nint)(delegate*<Vcpu, ref Insn, void>)&Je), (Mnemonic.Jne, (nint)(delegate*<Vcpu, ref Insn, void>)&Jne),
            (Mnemonic.Jbe, (nint)(delegate*<Vcpu, ref Insn, void>)&Jbe), (Mnemonic.Ja, (nint)(delegate*<Vcpu, ref Insn, void>)&Ja),
            (Mnemonic.Js, any), (Mnemonic.Jns, any), (Mnemonic.Jp, any), (Mnemonic.Jnp, any),
            (Mnemonic.Jl, any), (Mnemonic.Jge, any), (Mnemonic.Jle, any), (Mnemonic.Jg, any),
        ];
    }

    private static void JccAny(Vcpu c, ref Insn x) => c.S->Rip = c.Cond(x.Sub) ? x.Imm : x.NextIp;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Zero(CpuState* s) => s->LazyOp != 0 ? (s->LazyRes & Vcpu.SizeMask(s->LazySize)) == 0 : (s->RflagsRaw & Rflags.ZF) != 0;

    private static void Je(Vcpu c, ref Insn x) { var s = c.S; s->Rip = Zero(s) ? x.Imm : x.NextIp; }
    private static void Jne(Vcpu c, ref Insn x) { var s = c.S; s->Rip = Zero(s) ? x.NextIp : x.Imm; }
    private static void Jb(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(2) ? x.Imm : x.NextIp; }
    private static void Jae(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(3) ? x.Imm : x.NextIp; }
    private static void Jbe(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(6) ? x.Imm : x.NextIp; }
    private static void Ja(Vcpu c, ref Insn x) { c.S->Rip = c.Cond(7) ? x.Imm : x.NextIp; }

    private static bool BuildCall(ref Insn x, in Instruction ins)
    {
        if (IsNear(ins)) x.Exec = &CallRel;
        else if (ins.GetOpKind(0) == OpKind.Register) x.Exec = &CallR;
        else if (ins.GetOpKind(0) == OpKind.Memory && x.Size == 8) x.Exec = &CallM;
        else return false;
        return true;
    }

    internal static void CallRel(Vcpu c, ref Insn x) { c.Push64(x.NextIp); c.S->Rip = x.Imm; }
    internal static void CallR(Vcpu c, ref Insn x) { ulong t = c.S->Gpr[x.R0]; c.Push64(x.NextIp); c.S->Rip = t; }
    private static void CallM(Vcpu c, ref Insn x) { ulong t = c.Load(c.Ea(ref x), 3); c.Push64(x.NextIp); c.S->Rip = t; }

    private static bool BuildRet(ref Insn x, in Instruction ins)
    {
        x.Imm = ins.OpCount == 1 ? ins.Immediate16 : 0UL;
        x.Exec = &Ret;
        return true;
    }

    internal static void Ret(Vcpu c, ref Insn x)
    {
        var s = c.S;
        ulong sp = s->Gpr[Reg.Rsp];
        ulong t = c.Read64(sp);
        s->Gpr[Reg.Rsp] = sp + 8 + x.Imm;
        s->Rip = t;
    }

    private static bool BuildLoop(ref Insn x, in Instruction ins)
    {
        if ((x.Flags & InsnFlags.Addr32) != 0 || ins.CodeSize != CodeSize.Code64) return false;
        x.Exec = &LoopFamily;
        // The 0x67 prefix selects ecx for loop*/jecxz; Iced reports it as the Jecxz mnemonic or a 32-bit counter.
        if (ins.Op0Kind != OpKind.NearBranch64) return false;
        if (ins.HasAddressSizePrefix() && x.Sub >= 2) x.Sub |= 0x80;
        return true;
    }

    private static void LoopFamily(Vcpu c, ref Insn x)
    {
        var s = c.S;
        bool ecx = x.Sub == 1 || (x.Sub & 0x80) != 0;
        int kind = x.Sub & 0x7F;
        bool taken;
        if (kind <= 1) taken = (ecx ? (uint)s->Gpr[Reg.Rcx] : s->Gpr[Reg.Rcx]) == 0;
        else
        {
            ulong n = ecx ? (uint)(s->Gpr[Reg.Rcx] - 1) : s->Gpr[Reg.Rcx] - 1;
            s->Gpr[Reg.Rcx] = n; // an ECX count is already 32 bits: the write zero-extends, as any 32-bit register write
            taken = n != 0 && (kind == 2 || (kind == 3 ? c.ZF : !c.ZF));
        }
        s->Rip = taken ? x.Imm : x.NextIp;
    }
}

internal static class InstructionExtensions
{
    public static bool HasAddressSizePrefix(this in Instruction ins) =>
        ins.MemoryBase.GetSize() == 4 || ins.Code is Code.Loop_rel8_64_ECX or Code.Loope_rel8_64_ECX or Code.Loopne_rel8_64_ECX;
}
