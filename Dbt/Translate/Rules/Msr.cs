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
        uint[] msrs = write ? [Harness.Machine.Vcpu.MsrLstar, Harness.Machine.Vcpu.MsrGsBase] : [Harness.Machine.Vcpu.MsrLstar];
        int checks = msrs.Length * 2;
        e.Add(Instruction.Create(Code.Pushfq));
        // Interrupts off during the check: an interrupted frame can then only hold the state
        // before pushfq or right after it (both mapped back to the native wrmsr at switchoff).
        e.Add(Instruction.Create(Code.Cli));
        for (int k = 0; k < msrs.Length; k++)
        {
            e.Add(Instruction.Create(Code.Cmp_rm32_imm32, Register.ECX, unchecked((int)msrs[k])));
            // X is after: the remaining checks, popfq, the msr instruction, jmp C.
            e.Add(Instruction.CreateBranch(Code.Je_rel8_64, e.LabelAhead(checks - 2 * k - 1 + 3)));
        }
        e.Add(Instruction.Create(Code.Popfq));
        e.Identity();
        e.Add(Instruction.CreateBranch(Code.Jmp_rel8_64, e.LabelAhead(3)));
        e.Add(Instruction.Create(Code.Popfq));
        var kernel = e.Translator.Kernel;
        e.CallOut(write ? kernel.WrmsrCallOut : kernel.RdmsrCallOut, e.NextNative);
        // After that popfq interrupts may be on: the jmp to the call-out is the native state before the instruction.
        e.ResumeLastAt(e.Native.IP);
        return Flow.Continue;
    }
}
