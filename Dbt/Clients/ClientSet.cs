using Harness.Dbt.Cache;
using Harness.Smp;
using Harness.Dbt.Translate;
using Iced.Intel;

namespace Harness.Dbt.Clients;

/// <summary>One block's client bookkeeping (per emitter: translations nest, e.g. interrupt entry paths).</summary>
internal sealed class BlockState
{
    public Segment? Open;
    /// <summary>The open segment began with swapgs: no snippet until the kernel has loaded its own stack.</summary>
    public bool Deferred;
    public int Instructions;
    /// <summary>Whether the instruction between Before and After has an exception-table fixup.</summary>
    public bool CurrentFaultable;
}

/// <summary>
/// The clients attached to one DBT, and the translator's side of the hooks: it cuts each block into
/// segments, calls <see cref="Client.OnSegment"/> at a segment's start and patches its length in at
/// its end, calls <see cref="Client.OnInstruction"/> before each native instruction and
/// <see cref="Client.OnLookup"/> from the jumptable lookup.
///
/// A segment ends after every instruction that can leave the straight line: a non-sequential flow
/// (branch, call, ret, int, syscall, iretq, ...), any rule other than identity (a call-out continues
/// in another block), an instruction with an exception-table fixup (a fault goes to the fixup, so
/// the rest never runs) and port I/O (the exit port stops the machine right after its out). Counting
/// a whole segment at its start is then exact: an interrupt or a retried page fault resumes inside
/// the segment without counting again, and every way into the middle of a segment is a return to
/// the instruction after one of these, which starts a segment of its own.
/// </summary>
internal sealed class ClientSet
{
    private readonly Client[] clients;
    private readonly DbtOptions options;

    private ClientSet(Client[] clients, DbtOptions options)
    {
        this.clients = clients;
        this.options = options;
    }

    public IReadOnlyList<Client> All => clients;

    /// <summary>The clients the options name, attached (null if none).</summary>
    internal static ClientSet? Create(Machine machine, CodeCache cache, DbtOptions options, DbtStats stats)
    {
        if (options.Clients.Count == 0) return null;
        if (options.Clients.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"client '{twice.Key}' is named more than once");
        var made = options.Clients.Select(ClientRegistry.Create).ToArray();
        var counters = new List<(string, Counter)>();
        foreach (var c in made)
        {
            // One context per client, so each counter is known by the client that made it (reports list them all).
            var context = new ClientContext(machine, cache, options, stats);
            c.Attach(context);
            counters.AddRange(context.Counters.Select(k => (c.Name, k)));
        }
        return new ClientSet(made, options) { Counters = counters };
    }

    /// <summary>Every counter the clients made at attach, with its client's name, in attach order.</summary>
    public IReadOnlyList<(string Client, Counter Counter)> Counters { get; private init; } = [];

    internal void Before(Emitter e)
    {
        var st = e.ClientState ??= new BlockState();
        var ins = e.Native;
        st.CurrentFaultable = e.Translator.ExceptionTables is { } xt && xt.TryGetFixup(e.V, ins.IP, out _);
        if (st.Open is null)
        {
            st.Open = new Segment(e);
            st.Deferred = ins.Mnemonic == Mnemonic.Swapgs;
        }
        var seg = st.Open;
        // A deferred segment that ends here (or whose block does) gets its snippet now: on the kernel's stack.
        if (!seg.Started && (!st.Deferred || EndsSegment(ins, Rulebook.For(ins, options), st.CurrentFaultable)
                             || st.Instructions + 1 >= options.MaxBlockInstructions))
        {
            seg.Started = true;
            foreach (var c in clients) c.OnSegment(e, seg);
        }
        foreach (var c in clients) c.OnInstruction(e);
    }

    internal void After(Emitter e, Rule rule, Flow flow)
    {
        var st = e.ClientState!;
        var ins = e.Native;
        st.Instructions++;
        st.Open!.Length++;
        if (st.Deferred && LoadsStackPointer(ins)) st.Deferred = false;
        if (flow == Flow.EndBlock || EndsSegment(ins, rule, st.CurrentFaultable)) Close(st);
    }

    /// <summary>The block is complete (before layout): the last segment gets its length.</summary>
    internal void End(Emitter e)
    {
        if (e.ClientState is { } st) Close(st);
    }

    internal void Lookup(Emitter e, LookupPoint point)
    {
        foreach (var c in clients) c.OnLookup(e, point);
    }

    private static void Close(BlockState st)
    {
        st.Open?.Close();
        st.Open = null;
        st.Deferred = false;
    }

    private static bool EndsSegment(in Instruction ins, Rule rule, bool faultable) =>
        ins.FlowControl != FlowControl.Next || !ReferenceEquals(rule, Rulebook.Identity) || faultable
        || ins.Mnemonic is Mnemonic.Out or Mnemonic.Outsb or Mnemonic.Outsw or Mnemonic.Outsd;

    private static bool LoadsStackPointer(in Instruction ins) =>
        ins.Mnemonic == Mnemonic.Mov && ins.Op0Kind == OpKind.Register && ins.Op0Register == Register.RSP
        && !(ins.Op1Kind == OpKind.Register && ins.Op1Register == Register.RSP);
}
