using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// Planted bug (Verification's "stack-fence-unlocked"): a locked read-modify-write whose memory
/// operand is on the stack is copied without its lock prefix, as an author who reasons "the stack
/// is private, nobody else can see the RMW" might write it. The atomicity is indeed not needed;
/// the full fence is: gcc compiles __atomic_thread_fence(SEQ_CST) to `lock or $0,(%rsp)`. Harmless
/// under sequential consistency, wrong under x86-TSO. In effect only through
/// <see cref="DbtOptions.RuleOverrides"/> (or = planted-unlocked-stack-rmw).
/// </summary>
internal sealed class PlantedUnlockedStackRmwRule : Rule
{
    public override string Name => "planted-unlocked-stack-rmw";

    public override Flow Emit(Emitter e)
    {
        var ins = e.Native;
        if (ins.HasLockPrefix && ins.MemoryBase == Register.RSP)
        {
            ins.HasLockPrefix = false;
            e.Add(ins);
        }
        else e.Identity();
        return Flow.Continue;
    }
}
