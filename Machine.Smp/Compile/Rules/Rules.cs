using Harness.Smp.Decode;
using Iced.Intel;

namespace Harness.Smp.Compile;

// The compile rules, keyed by the interpreter handler the decoder chose for an instruction (so a
// rule applies exactly where that handler would run: same mnemonic, operand form, size and
// prefixes). Rows with a form map are found through the decode table itself; the families whose
// builders pick a handler name it. One file per instruction family, as in Exec/.
internal sealed unsafe partial class BlockEmitter
{
    private delegate bool Rule(BlockEmitter e);

    private static readonly Dictionary<nint, Rule> rules = Install();

    /// <summary>Emits the current instruction through its rule; false when it has none (or the rule declines this operand form).</summary>
    private bool TryRule() => rules.TryGetValue((nint)X->Exec, out var rule) && rule(this);

    /// <summary>How many handlers have a compile rule (docs and tests).</summary>
    internal static int RuleCount => rules.Count;

    private static Dictionary<nint, Rule> Install()
    {
        var map = new Dictionary<nint, Rule>();
        AluRules(map);
        MoveRules(map);
        ShiftRules(map);
        MulRules(map);
        StackRules(map);
        BranchRules(map);
        return map;
    }

    /// <summary>Every unlocked handler of a mnemonic's form (all operand sizes) gets the rule.</summary>
    private static void OnForm(Dictionary<nint, Rule> map, Mnemonic m, Form form, Rule rule)
    {
        if (!OpTable.TryRow(m, out var row) || row.Forms is not { } forms)
            throw new InvalidOperationException($"compile rule for {m}: the decode table has no form map for it");
        for (int log = 0; log < 4; log++)
            if (forms.Find(form, log, isLocked: false) is var h && h != null) map[(nint)h] = rule;
    }

    /// <summary>A mnemonic whose row has one handler for every form.</summary>
    private static void OnRow(Dictionary<nint, Rule> map, Mnemonic m, Rule rule)
    {
        if (!OpTable.TryRow(m, out var row) || row.Exec == null)
            throw new InvalidOperationException($"compile rule for {m}: the decode table has no single handler for it");
        map[(nint)row.Exec] = rule;
    }

    private static void On(Dictionary<nint, Rule> map, delegate*<Vcpu, ref Insn, void> handler, Rule rule) => map[(nint)handler] = rule;
}
