// The worked example of docs/writing-rules.md: the code between the markers is quoted there
// verbatim, and RulesTests checks that the two agree and that the example does what the guide says.
// <worked-example>
using Harness.Dbt;
using Harness.Dbt.Clients;
using Harness.Dbt.Translate;
using Iced.Intel;

namespace RuleExamples;

/// <summary>A rule: every nop (0x90, and the multi-byte 0F 1F forms) is translated to nothing.</summary>
public sealed class ElideNopRule : Rule
{
    public override string Name => "elide-nop";

    // A nop has no effect but to advance RIP, and the translator already continues with the next
    // instruction: emitting nothing is its whole translation.
    public override Flow Emit(Emitter e) => Flow.Continue;
}

/// <summary>A client: counts the calls (direct and indirect) the translated code executes.</summary>
public sealed class CallCounter : Client
{
    public Counter Calls { get; private set; } = null!;

    public override string Name => "call-counter";

    public override void Attach(ClientContext context) => Calls = context.NewCounter("calls");

    // Runs before the translation of each native instruction: the increment lands in front of the
    // call, so it runs exactly when the call does. Snippets.Add keeps the guest's flags intact.
    public override void OnInstruction(Emitter e)
    {
        if (e.Native.FlowControl is FlowControl.Call or FlowControl.IndirectCall)
            Snippets.Add(e, Calls);
    }
}

public static class Registration
{
    /// <summary>Once per process, before a DBT names them.</summary>
    public static void RegisterAll()
    {
        RuleRegistry.Register("elide-nop", () => new ElideNopRule());
        ClientRegistry.Register("call-counter", () => new CallCounter());
    }

    /// <summary>A configuration that uses both: nops elided, calls counted, and prof alongside.</summary>
    public static DbtOptions Options() => new()
    {
        RuleOverrides = new Dictionary<Mnemonic, string> { [Mnemonic.Nop] = "elide-nop" },
        Clients = ["call-counter", "prof"],
    };
}
// </worked-example>
