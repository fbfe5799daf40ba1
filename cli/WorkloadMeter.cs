using System.Diagnostics;
using Harness.Dbt.Clients;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>One interval of a translated run: prof's counts (dispatcher counts only without prof), blocks translated and host time.</summary>
internal sealed record WorkloadRow(string Name, ProfCounts Counts, long Blocks, TimeSpan Host, bool HasProf, long[] Clients);

/// <summary>
/// Per-workload measurements of a translated run. Workloads run one after another and each ends
/// with a `workload` console line (<see cref="ConsoleTap.WorkloadEnded"/>), so a snapshot of the
/// counters at each such line, minus the previous one, is that workload. The first workload starts
/// when user-mode code first runs; everything before it is the "boot" row. Snapshots are taken on
/// the vCPU thread that printed the line while other vCPUs keep running, so under free-running
/// execution an interval's edges are as sharp as the console is.
/// </summary>
internal sealed class WorkloadMeter(Harness.Dbt.KernelDbt dbt)
{
    private readonly Prof? prof = dbt.Client<Prof>();
    // Every other client's counters (prof's have their own columns): a user's client is reported without the CLI knowing it.
    private readonly (string Client, Counter Counter)[] others = dbt.ClientCounters.Where(c => c.Client != Harness.Dbt.Clients.Prof.ClientName).ToArray();

    /// <summary>"client.counter" for each entry of <see cref="WorkloadRow.Clients"/>.</summary>
    public IReadOnlyList<string> ClientColumns => others.Select(c => $"{c.Client}.{c.Counter.Name}").ToList();
    private readonly Stopwatch clock = new();
    private readonly object gate = new();
    private readonly List<WorkloadRow> rows = [];
    private Sample start, last;
    private int userModeSeen;

    private readonly record struct Sample(ProfCounts Counts, long Blocks, TimeSpan Host, long[] Clients);

    public bool HasProf => prof is not null;

    /// <summary>"boot" (if the image ran user code) and one row per workload line, in order.</summary>
    public IReadOnlyList<WorkloadRow> Rows { get { lock (gate) return rows.ToArray(); } }

    /// <summary>The whole run, start to stop.</summary>
    public WorkloadRow? Total { get; private set; }

    /// <summary>prof's counts at the end of the run (null without prof).</summary>
    public ProfCounts? Prof { get; private set; }

    public void Start()
    {
        clock.Start();
        start = last = Take();
    }

    public void UserModeStarted()
    {
        if (Volatile.Read(ref userModeSeen) != 0 || Interlocked.Exchange(ref userModeSeen, 1) != 0) return;
        lock (gate) if (rows.Count == 0) Add("boot");
    }

    public void WorkloadEnded(string name)
    {
        lock (gate) Add(name);
    }

    /// <summary>After the run, while the machine's memory (where prof's counters live) still exists.</summary>
    public void Finish()
    {
        lock (gate)
        {
            var end = Take();
            Total = Between("total", start, end);
            Prof = prof?.Read();
        }
    }

    private void Add(string name)
    {
        var now = Take();
        rows.Add(Between(name, last, now));
        last = now;
    }

    private WorkloadRow Between(string name, Sample a, Sample b) =>
        new(name, b.Counts - a.Counts, b.Blocks - a.Blocks, b.Host - a.Host, HasProf, b.Clients.Zip(a.Clients, (x, y) => x - y).ToArray());

    private Sample Take()
    {
        var s = dbt.Stats;
        var counts = prof?.Read() ?? new ProfCounts(0, 0, 0, 0, s.DispatcherEntries, s.IndirectDispatches);
        return new Sample(counts, s.BlocksTranslated, clock.Elapsed, others.Select(c => c.Counter.Read()).ToArray());
    }
}
