namespace Harness.Dbt.Translate;

/// <summary>lidt/sidt: a host call-out that installs (or reports) the guest's IDT while the vCPU runs the shadow.</summary>
internal sealed class DescriptorTableRule(bool load) : Rule
{
    public override string Name => load ? "lidt" : "sidt";
    public override Flow Emit(Emitter e)
    {
        var ins = e.Native;
        var targets = e.Translator.CallOuts;
        e.CallOut(load ? (v, rsp) => targets.Lidt(v, rsp, ins) : (v, rsp) => targets.Sidt(v, rsp, ins), e.NextNative);
        return Flow.EndBlock;
    }
}
