using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// wrmsr/rdmsr: the MSRs the DBT shadows (LSTAR, and GS base for wrmsr, whose area holds the
/// DBT's per-CPU words) go to a host call-out; every other MSR runs natively after an inline
/// check of ECX (flags saved around it).
/// <code>
///   pushfq; cli; cmp ecx, LSTAR; je X; [cmp ecx, GS_BASE; je X;] popfq; wrmsr; jmp short C
///   X: popfq; jmp call-out        ; continues at the next native instruction
///   C:
/// </code>
/// </summary>
internal sealed class MsrRule(bool write) : Rule
{
    public override string Name => write ? "wrmsr" : "rdmsr";
    public override Flow Emit(Emitter e)
    {
        uint[] msrs = write ? [Harness.Smp.Vcpu.MsrLstar, Harness.Smp.Vcpu.MsrGsBase] : [Harness.Smp.Vcpu.MsrLstar];
        e.Add(Instruction.Create(Code.Pushfq));
        // Interrupts off during the check: an interrupted frame can then only hold the state
        // before pushfq or right after it (both mapped back to the native wrmsr at switchoff).
        e.Add(Instruction.Create(Code.Cli));
        var toCallOut = new List<int>();
        foreach (uint msr in msrs)
        {
            e.Add(Instruction.Create(Code.Cmp_rm32_imm32, Register.ECX, unchecked((int)msr)));
            toCallOut.Add(e.BranchForward(Code.Je_rel8_64));   // je X
        }
        e.Add(Instruction.Create(Code.Popfq));
        e.Identity();
        int done = e.BranchForward(Code.Jmp_rel8_64);          // jmp short C
        foreach (int je in toCallOut) e.Bind(je);
        e.Add(Instruction.Create(Code.Popfq));                 // X:
        var targets = e.Translator.CallOuts;
        e.CallOut(write ? targets.Wrmsr : targets.Rdmsr, e.NextNative);
        // After that popfq interrupts may be on: the jmp to the call-out is the native state before the instruction.
        e.ResumeLastAt(e.Native.IP);
        e.Bind(done);                                          // C:
        return Flow.Continue;
    }
}
