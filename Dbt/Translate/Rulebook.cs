using System.Runtime.CompilerServices;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// The rulebook: which rule translates a native instruction, as data. One rule per instruction
/// family (each in its own file under Translate/Rules/), named in <see cref="RuleRegistry"/>, and
/// chosen by two tables: first by mnemonic (the exceptions, and the user's
/// <see cref="DbtOptions.RuleOverrides"/>), then by Iced's flow-control class, with one column per
/// configuration (call/ret identity or no-callret). Adding a family means adding a rule file and a
/// row here.
/// </summary>
internal static class Rulebook
{
    public static readonly Rule Identity = new IdentityRule(false);
    public static readonly Rule IdentityEnd = new IdentityRule(true);
    public static readonly Rule DirectJmp = new DirectJmpRule();
    public static readonly Rule DirectJcc = new DirectJccRule();
    public static readonly Rule CountedJcc = new CountedJccRule();
    public static readonly Rule DirectCall = new DirectCallRule();
    public static readonly Rule IndirectJmp = new IndirectRule(call: false);
    public static readonly Rule IndirectCall = new IndirectRule(call: true);
    public static readonly Rule Unsupported = new UnsupportedRule();
    public static readonly Rule Iretq = new IretqRule();
    public static readonly Rule DrkIretq = new DrkIretqRule();
    public static readonly Rule FarReturn = new FarReturnRule();
    public static readonly Rule Hypercall = new HypercallRule();
    // The no-callret configuration: native return addresses on the stack, ret as an indirect branch.
    public static readonly Rule NativeReturnCall = new NativeReturnCallRule(indirect: false);
    public static readonly Rule NativeReturnIndirectCall = new NativeReturnCallRule(indirect: true);
    public static readonly Rule NativeReturnRet = new NativeReturnRetRule();
    public static readonly Rule Wrmsr = new MsrRule(write: true);
    public static readonly Rule Rdmsr = new MsrRule(write: false);
    public static readonly Rule Lidt = new DescriptorTableRule(load: true);
    public static readonly Rule Sidt = new DescriptorTableRule(load: false);
    public static readonly Rule PlantedUnlockedStackRmw = new PlantedUnlockedStackRmwRule();

    internal static IEnumerable<Rule> BuiltIn =>
    [
        Identity, IdentityEnd, DirectJmp, DirectJcc, CountedJcc, DirectCall, IndirectJmp, IndirectCall, Unsupported,
        Iretq, DrkIretq, FarReturn, Hypercall, NativeReturnCall, NativeReturnIndirectCall, NativeReturnRet, Wrmsr, Rdmsr, Lidt, Sidt,
        PlantedUnlockedStackRmw,
    ];

    /// <summary>The exceptions to the flow-control table, in every configuration.</summary>
    private static readonly (Mnemonic Mnemonic, string Rule)[] byMnemonic =
    [
        // Counted/rcx branches exist only with rel8: branch over a chained rel32 jmp.
        (Mnemonic.Jrcxz, "counted-jcc"), (Mnemonic.Jecxz, "counted-jcc"),
        (Mnemonic.Loop, "counted-jcc"), (Mnemonic.Loope, "counted-jcc"), (Mnemonic.Loopne, "counted-jcc"),
        // iretq restores tx-nextpc-loc from the frame's redundant slot (the save is EntryPath's).
        (Mnemonic.Iretq, "iretq"),
        (Mnemonic.Iret, "identity-end"), (Mnemonic.Iretd, "identity-end"),
        // The kernel's interrupt and syscall entry points: followed so the shadow tables match.
        (Mnemonic.Lidt, "lidt"), (Mnemonic.Sidt, "sidt"),
        (Mnemonic.Wrmsr, "wrmsr"), (Mnemonic.Rdmsr, "rdmsr"),
        (Mnemonic.Sysret, "identity-end"), (Mnemonic.Sysretq, "identity-end"), (Mnemonic.Sysexit, "identity-end"),
        (Mnemonic.Syscall, "identity-end"), (Mnemonic.Retf, "lretq"),
        (Mnemonic.Hlt, "identity"),
        // The kernel's DBT hypercall (dbt_hypercall): a call-out to switchon/switchoff.
        (Mnemonic.Vmcall, "hypercall"),
    ];

    /// <summary>Everything else, by flow-control class: the rule under call/ret identity and under no-callret.</summary>
    private static readonly (FlowControl Flow, string CallRet, string NoCallRet)[] byFlow =
    [
        (FlowControl.Next, "identity", "identity"),
        (FlowControl.UnconditionalBranch, "direct-jmp", "direct-jmp"),
        (FlowControl.ConditionalBranch, "direct-jcc", "direct-jcc"),
        (FlowControl.Call, "direct-call", "no-callret-call"),
        (FlowControl.IndirectBranch, "indirect-jmp", "indirect-jmp"),
        (FlowControl.IndirectCall, "indirect-call", "no-callret-indirect-call"),
        // call/ret identity: the return address is a cache address, so ret stays ret.
        (FlowControl.Return, "identity-end", "no-callret-ret"),
        // int n / int3: the handler's iretq returns to the next cache instruction.
        (FlowControl.Interrupt, "identity", "identity"),
        // ud0/ud1/ud2: never falls through.
        (FlowControl.Exception, "identity-end", "identity-end"),
        (FlowControl.XbeginXabortXend, "unsupported", "unsupported"),
    ];

    private static readonly ConditionalWeakTable<DbtOptions, Table> tables = new();

    public static Rule For(in Instruction ins, DbtOptions options) => TableOf(options).For(ins);

    /// <summary>Builds the tables of a configuration now, so that an unknown rule name fails at attach rather than mid-run.</summary>
    public static void Prepare(DbtOptions options) => TableOf(options);

    private static Table TableOf(DbtOptions options) => tables.GetValue(options, o => new Table(o));

    /// <summary>One configuration's tables, resolved to rule instances and indexed by enum value.</summary>
    private sealed class Table
    {
        private readonly Rule?[] mnemonics = new Rule?[Enum.GetValues<Mnemonic>().Max(m => (int)m) + 1];
        private readonly Rule[] flows = new Rule[Enum.GetValues<FlowControl>().Max(f => (int)f) + 1];
        private readonly bool callRet;

        public Table(DbtOptions o)
        {
            callRet = o.CallRet;
            var made = new Dictionary<string, Rule>();
            Rule Make(string name) => made.TryGetValue(name, out var r) ? r : made[name] = RuleRegistry.Create(name);
            foreach (var (m, name) in byMnemonic) mnemonics[(int)m] = Make(name);
            // DRK-style: iretq is a dispatcher exit (handlers' frames hold native RIPs).
            if (o.InterruptsViaDispatcher) mnemonics[(int)Mnemonic.Iretq] = Make("drk-iretq");
            foreach (var (m, name) in o.RuleOverrides) mnemonics[(int)m] = Make(name);
            Array.Fill(flows, Unsupported);
            foreach (var (f, withCallRet, noCallRet) in byFlow) flows[(int)f] = Make(callRet ? withCallRet : noCallRet);
        }

        public Rule For(in Instruction ins)
        {
            if (mnemonics[(int)ins.Mnemonic] is { } r) return r;
            var flow = ins.FlowControl;
            // Forms of a family its rule does not take: returns other than near ret under no-callret,
            // far indirect jumps and calls (m16:64), direct branches without a near target.
            if (!callRet && flow == FlowControl.Return && ins.Mnemonic != Mnemonic.Ret) return Unsupported;
            if (flow is FlowControl.IndirectBranch or FlowControl.IndirectCall && ins.Op0Kind == OpKind.Memory && ins.MemorySize is MemorySize.SegPtr16 or MemorySize.SegPtr32 or MemorySize.SegPtr64)
                return Unsupported;
            if (flow is FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch or FlowControl.Call && ins.Op0Kind != OpKind.NearBranch64)
                return Unsupported;
            return flows[(int)flow];
        }
    }
}
