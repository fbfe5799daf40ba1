using Harness.Dbt.Translate;

namespace Harness.Dbt.Clients;

/// <summary>
/// A straight-line run of native instructions within a block (<see cref="Client.OnSegment"/>). Its
/// length is known only when it ends, so <see cref="AddLengthTo"/> emits the increment now and
/// fills in the amount then.
/// </summary>
public sealed class Segment
{
    private readonly Emitter e;
    private readonly List<int> amounts = [];

    internal Segment(Emitter e) => this.e = e;

    /// <summary>Native instructions so far (all of them once the segment has ended).</summary>
    public int Length { get; internal set; }

    internal bool Started { get; set; }

    /// <summary>Adds this segment's native instruction count to counter each time the segment runs (flags preserved).</summary>
    public void AddLengthTo(Counter counter) => amounts.Add(Snippets.AddItem(e, counter, 0, preserveFlags: true));

    internal void Close()
    {
        foreach (int item in amounts) e.SetImmediate(item, Length);
    }
}
