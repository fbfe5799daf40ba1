using Harness.Dbt.Translate;

namespace Harness.Dbt.Clients;

/// <summary>Where in the inline jumptable lookup of an indirect branch a client hook runs.</summary>
public enum LookupPoint
{
    /// <summary>Every indirect branch, before the probe.</summary>
    Start,
    /// <summary>The target was in level 1: the branch leaves for tx right after.</summary>
    Level1Hit,
    /// <summary>Not in level 1: the shared level-2 routine follows (a hit there, or the dispatcher).</summary>
    Level1Miss,
}

/// <summary>
/// An instrumentation client (the paper's "clients": prof is one). A client is registered by name
/// with <see cref="ClientRegistry"/> and attached through <see cref="DbtOptions.Clients"/>; the DBT
/// creates one instance per attach and calls <see cref="Attach"/> before anything is translated.
/// The hooks run while a block is translated and add code to it through the <see cref="Emitter"/>.
/// What runs in the cache must leave the guest's registers, flags and memory as they were:
/// <see cref="Snippets"/> has counter increments that do (docs/writing-rules.md).
/// </summary>
public abstract class Client
{
    public abstract string Name { get; }

    /// <summary>Once, before any translation: allocate counters here.</summary>
    public virtual void Attach(ClientContext context) { }

    /// <summary>
    /// A segment starts: the straight-line native instructions up to the next one that can transfer
    /// control (a branch, call, ret, int, an instruction with an exception-table fixup, port I/O) or
    /// the end of the block. Code added here runs each time the segment is entered from its start;
    /// <see cref="Segment.AddLengthTo"/> counts its native instructions exactly.
    /// </summary>
    public virtual void OnSegment(Emitter e, Segment segment) { }

    /// <summary>Before the translation of each native instruction (<see cref="Emitter.Native"/>).</summary>
    public virtual void OnInstruction(Emitter e) { }

    /// <summary>
    /// Inside the inline jumptable lookup of every indirect branch, with the guest's flags saved and
    /// interrupts off: code here may change the flags but must keep every register and the stack.
    /// </summary>
    public virtual void OnLookup(Emitter e, LookupPoint point) { }
}
