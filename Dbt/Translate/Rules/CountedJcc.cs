using Harness.Dbt.Dispatch;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// jrcxz/jecxz/loop/loope/loopne (rel8 only): <c>op X; jmp short Over; X: jmp rel32 target (chained); Over:</c>.
/// </summary>
internal sealed class CountedJccRule : Rule
{
    public override string Name => "counted-jcc";
    public override Flow Emit(Emitter e)
    {
        int taken = e.BranchForward(e.Native);                 // op X
        int over = e.BranchForward(Code.Jmp_rel8_64);          // jmp short Over
        // loop/jrcxz run with interrupts on, so a frame can hold either branch after the native
        // instruction's effect (RCX already counted down): not taken, or taken at X. Without these
        // points a flush left such a frame's RIP in the old cache (flush-equals-fresh found it: the
        // iretq after the wipe landed in whatever block then sat at X).
        e.ResumeLastAt(e.Native.NextIP);
        e.Bind(taken);
        e.BranchToNative(Emitter.Jmp, e.Native.NearBranch64, EdgeKind.Jcc);
        if (!e.Options.PlantedCountedJccTakenNotRecovered) e.ResumeLastAt(e.Native.NearBranch64);
        e.Bind(over);
        return Flow.Continue;
    }
}
