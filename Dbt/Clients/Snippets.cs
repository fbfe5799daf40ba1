using Harness.Dbt.Translate;
using Iced.Intel;

namespace Harness.Dbt.Clients;

/// <summary>
/// Counter increments for client code in the cache. The flags-preserving form is the paper's prof
/// snippet: guest code between a flag-setting instruction and the jcc that reads the flags may be
/// split by a counter (two jccs on one cmp put a segment boundary right between them), so the add
/// must not change what the jcc sees.
/// <code>
///   pushfq; cli; lock add qword [counter], n; popfq
/// </code>
/// The cli keeps an interrupt from arriving while the guest's flags are on the stack (an interrupted
/// state inside the snippet is then at most "one word pushed", like every other translation prefix),
/// and popfq restores IF with the rest. The word below RSP is the only scratch, as for every rule:
/// the kernel keeps nothing live there (no red zone: docs/kernel-contract.md section 4). The one
/// stack that is not the kernel's is the user's at the syscall entry (syscall does not switch
/// stacks), so a segment that starts with swapgs gets its snippets only after the kernel's
/// <c>mov rsp, ...</c> (<see cref="ClientSet"/>).
/// </summary>
public static class Snippets
{
    /// <summary>Adds amount to counter, preserving the flags (and everything else).</summary>
    public static void Add(Emitter e, Counter counter, int amount = 1) => AddItem(e, counter, amount, preserveFlags: true);

    /// <summary>Adds amount to counter where the guest's flags are already saved (<see cref="Client.OnLookup"/>): the add sets the flags.</summary>
    public static void AddFlagsSaved(Emitter e, Counter counter, int amount = 1) => AddItem(e, counter, amount, preserveFlags: false);

    /// <summary>Emits the increment; returns the item index of the add (whose amount a segment patches).</summary>
    internal static int AddItem(Emitter e, Counter counter, int amount, bool preserveFlags)
    {
        // Planted bug: the add without the flags saved around it.
        bool save = preserveFlags && !e.Options.PlantedCounterClobbersFlags;
        if (save)
        {
            e.Add(Instruction.Create(Code.Pushfq));
            e.Add(Instruction.Create(Code.Cli));
        }
        // Always the imm32 form: a segment's amount is patched after the fact and must not change the encoding.
        var add = Instruction.Create(Code.Add_rm64_imm32, counter.Operand, amount);
        add.HasLockPrefix = true;
        e.Add(add);
        int item = e.Count - 1;
        if (save) e.Add(Instruction.Create(Code.Popfq));
        return item;
    }
}
