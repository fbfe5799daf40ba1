using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// lretq (64-bit far return; the kernel's boot-time CS reload is one, docs/kernel-contract.md
/// section 1): a computed branch that also loads CS, so a host call-out (rare: once per CPU at
/// boot) pops both and continues at the translation of the popped RIP.
/// </summary>
internal sealed class FarReturnRule : Rule
{
    public override string Name => "lretq";
    public override Flow Emit(Emitter e)
    {
        if (e.Native.Code != Code.Retfq) return Rulebook.Unsupported.Emit(e);
        e.CallOut(Kernel.KernelEntries.FarReturn, e.NextNative);
        return Flow.EndBlock;
    }
}
