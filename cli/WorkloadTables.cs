using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// The paper's Table 3 analogue on stderr: per workload, guest instructions, indirect branches,
/// dispatcher entries and jumptable hit rates (level 1 and level 2, as shares of the indirect
/// branches), one column per configuration when several ran (--compare); with --stats also blocks
/// translated and host time.
/// </summary>
internal static class Table3
{
    private sealed record Metric(string Name, bool NeedsProf, bool StatsOnly, Func<WorkloadRow, string> Cell);

    private static readonly Metric[] metrics =
    [
        new("guest insns", NeedsProf: true, StatsOnly: false, r => r.Counts.Instructions.ToString("N0")),
        new("indirect", NeedsProf: true, StatsOnly: false, r => r.Counts.IndirectBranches.ToString("N0")),
        new("dispatcher", NeedsProf: false, StatsOnly: false, r => r.Counts.DispatcherEntries.ToString("N0")),
        new("L1 hits", NeedsProf: true, StatsOnly: false, r => Percent(r, r.Counts.Level1HitRate)),
        new("L2 hits", NeedsProf: true, StatsOnly: false, r => Percent(r, r.Counts.Level2HitRate)),
        new("blocks", NeedsProf: false, StatsOnly: true, r => r.Blocks.ToString("N0")),
        new("host ms", NeedsProf: false, StatsOnly: true, r => r.Host.TotalMilliseconds.ToString("N1")),
    ];

    // Short headers keep the side-by-side table narrow; the caption says what they mean.
    private const string Legend =
        "guest insns: kernel instructions executed from the code cache; indirect: indirect branches (jumptable lookups); " +
        "dispatcher: dispatcher entries; L1/L2 hits: lookups resolved in jumptable level 1 / level 2, as % of indirect; " +
        "blocks: blocks translated; boot: up to the first user-mode instruction";

    private static string Percent(WorkloadRow r, double rate) => r.Counts.IndirectBranches == 0 ? "-" : $"{rate * 100:F2}%";

    public static void Print(IReadOnlyList<(string Config, WorkloadMeter Meter)> runs, bool withStats)
    {
        bool prof = runs.All(x => x.Meter.HasProf);
        var shown = metrics.Where(m => (prof || !m.NeedsProf) && (withStats || !m.StatsOnly)).Select(m => (m.Name, m.Cell)).ToList();
        WorkloadTable.Write($"per workload (the paper's Table 3){(prof ? ", prof" : "")}: {string.Join(" vs ", runs.Select(x => x.Config))}", Legend, runs, shown);
    }
}

/// <summary>
/// One row per workload (paired by position across configurations: one that stopped early has
/// fewer), a total row, and for each column one sub-column per configuration, on stderr.
/// </summary>
internal static class WorkloadTable
{
    public static void Write(string title, string? caption, IReadOnlyList<(string Config, WorkloadMeter Meter)> runs,
        IReadOnlyList<(string Name, Func<WorkloadRow, string> Cell)> columns)
    {
        bool several = runs.Count > 1;
        var table = new Table().AddColumn("workload");
        table.Title = new TableTitle(Markup.Escape(title));
        if (caption is not null) table.Caption = new TableTitle(Markup.Escape(caption));
        foreach (var (name, _) in columns)
            foreach (var (config, _) in runs)
                table.AddColumn(new TableColumn(Markup.Escape(several ? $"{name}\n{config}" : name)).RightAligned());

        var perRun = runs.Select(x => x.Meter.Rows).ToList();
        int count = perRun.Max(r => r.Count);
        void Row(string name, Func<int, WorkloadRow?> pick)
        {
            var cells = new List<string> { Markup.Escape(name) };
            foreach (var (_, cell) in columns)
                for (int k = 0; k < runs.Count; k++)
                    cells.Add(pick(k) is { } r ? Markup.Escape(cell(r)) : "-");
            table.AddRow(cells.ToArray());
        }
        for (int i = 0; i < count; i++)
        {
            int row = i;
            string name = perRun.First(r => r.Count > row)[row].Name;
            Row(name, k => perRun[k].Count > row && perRun[k][row].Name == name ? perRun[k][row] : null);
        }
        if (count > 0) table.AddEmptyRow();
        Row("total", k => runs[k].Meter.Total);

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        // Redirected stderr would otherwise be taken as 80 columns wide and numbers would wrap.
        if (Console.IsErrorRedirected) console.Profile.Width = 200;
        console.Write(table);
    }
}

/// <summary>
/// The counters of every attached client other than prof (a translator author's own, loaded with
/// --rules): per workload when the image printed workload lines, and for the whole run.
/// </summary>
internal static class ClientTable
{
    public static void Print(IReadOnlyList<(string Config, WorkloadMeter Meter)> runs)
    {
        var names = runs.Select(r => r.Meter.ClientColumns).FirstOrDefault(c => c.Count > 0);
        if (names is null) return;
        var columns = names.Select((n, i) => (n, (Func<WorkloadRow, string>)(r => i < r.Clients.Length ? r.Clients[i].ToString("N0") : "-"))).ToList();
        WorkloadTable.Write($"client counters (client.counter): {string.Join(" vs ", runs.Select(x => x.Config))}", null, runs, columns);
    }
}
