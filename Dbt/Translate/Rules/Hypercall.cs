namespace Harness.Dbt.Translate;

/// <summary>
/// vmcall in kernel code: the DBT hypercall (RAX = 0x444254, RDI = command), run as a call-out
/// that leaves the result in RAX; any other vmcall stops the machine, naming it.
/// </summary>
internal sealed class HypercallRule : Rule
{
    public override string Name => "hypercall";
    public override Flow Emit(Emitter e)
    {
        var targets = e.Translator.CallOuts;
        ulong at = e.Native.IP;
        e.CallOut((v, rsp) =>
        {
            if ((uint)v.Gpr(Harness.Smp.Cpu.Reg.Rax) != Kernel.Switch.HypercallMagic)
                throw new TranslationException($"vmcall at 0x{at:x} with RAX 0x{v.Gpr(Harness.Smp.Cpu.Reg.Rax):x}: not the DBT hypercall");
            v.Gpr(Harness.Smp.Cpu.Reg.Rax) = (ulong)targets.Hypercall(v);
            return null;
        }, e.NextNative, "vmcall");
        return Flow.EndBlock;
    }
}
