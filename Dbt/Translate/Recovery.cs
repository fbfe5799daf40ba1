using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// How to turn a vCPU state at one code-cache instruction boundary into the native state (switchoff,
/// cache flush): resume at Native after popping Pops words the translation pushed, taking RFLAGS from
/// the word FlagsWord slots above RSP if the translation saved the native flags there (-1: the live
/// flags are native). TargetOnStack: the word at RSP is tx of the native target (the jumptable
/// lookup's final ret), whose native address is the resume point.
/// </summary>
public readonly record struct Recovery(ulong Native, int Pops, int FlagsWord, bool TargetOnStack = false);

/// <summary>
/// Computes the recovery points of one native instruction's translation from the items its rule
/// emitted, without the rules' help (so every rule gets them): before the first item the state is
/// native; while the sequence has only pushed words (push, pushfq) and cleared IF, undoing the pushes
/// gives the native state back; the identity copy of the native instruction at stack depth 0 is a
/// native boundary, and right after it (the next item, still at depth 0) so is the next native instruction; a
/// synthetic ret is the jumptable's exit with tx on the stack. Every other point has none: those lie
/// where interrupts are off and a world stop does not park there.
/// </summary>
internal static class RecoveryPoints
{
    public static void Compute(List<Emitter.Item> items, int start, int end, in Instruction native, Recovery?[] into)
    {
        int depth = 0, flagsAt = -1;
        bool prefix = true, afterIdentity = false;
        for (int k = start; k < end; k++)
        {
            var it = items[k];
            Recovery? r = null;
            if (k == start) r = new Recovery(native.IP, 0, -1);
            else if (it.Resume != 0 && depth == 0) r = new Recovery(it.Resume, 0, -1);
            else if (prefix) r = new Recovery(native.IP, depth, flagsAt < 0 ? -1 : depth - 1 - flagsAt);
            else if (it.IsIdentity && depth == 0) r = new Recovery(native.IP, 0, -1);
            else if (afterIdentity && depth == 0) r = new Recovery(native.NextIP, 0, -1);
            else if (!it.IsIdentity && it.Ins.Code is Code.Retnq or Code.Retnq_imm16) r = new Recovery(0, 1, -1, TargetOnStack: true);
            into[k] = r;

            var code = it.Ins.Code;
            bool push = code is Code.Pushq_imm32 or Code.Pushq_imm8 or Code.Push_r64 or Code.Push_rm64 or Code.Pushfq
                || it.PushAddressOfIp != 0;
            if (push && !it.IsIdentity)
            {
                if (code == Code.Pushfq) flagsAt = depth;
                depth++;
            }
            else if (code == Code.Cli && !it.IsIdentity) { }
            else
            {
                prefix = false;
                if (!it.IsIdentity && code is Code.Pop_r64 or Code.Pop_rm64 or Code.Popfq) depth--;
            }
            // Only the item right after the identity copy follows it in execution order; later items
            // may be branch targets reached without it (the wrmsr rule's call-out path).
            afterIdentity = it.IsIdentity;
        }
    }
}
