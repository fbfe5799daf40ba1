using System.Text;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// Passes the guest console through to stdout unchanged and keeps the machine-readable lines the
/// guest workloads print (`result &lt;workload&gt; key=value ...`, `workload &lt;name&gt; exit=N`) for the
/// summary printed after the run.
/// </summary>
internal sealed class ConsoleTap(Stream inner) : Stream
{
    private readonly List<byte> line = [];
    public List<(string Workload, List<(string Key, string Value)> Fields)> Results { get; } = [];
    /// <summary>`workload &lt;name&gt; exit=N time=T` lines: how each workload ended and its guest time.</summary>
    public List<(string Workload, List<(string Key, string Value)> Fields)> Workloads { get; } = [];

    /// <summary>Called with the workload's name when its `workload` line is complete (on the vCPU thread that printed it).</summary>
    public Action<string>? WorkloadEnded { get; set; }

    public override void Write(byte[] buffer, int offset, int count)
    {
        inner.Write(buffer, offset, count);
        for (int i = 0; i < count; i++) Take(buffer[offset + i]);
    }

    public override void WriteByte(byte value)
    {
        inner.WriteByte(value);
        Take(value);
    }

    private void Take(byte b)
    {
        if (b != (byte)'\n') { if (line.Count < 4096) line.Add(b); return; }
        var text = Encoding.ASCII.GetString(line.ToArray()).TrimEnd('\r');
        line.Clear();
        var words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words.Length >= 2 && words[0] == "result")
            Results.Add((words[1], words.Skip(2).Select(Field).ToList()));
        else if (words.Length >= 3 && words[0] == "workload" && words[2].StartsWith("exit=", StringComparison.Ordinal))
        {
            Workloads.Add((words[1], words.Skip(2).Select(Field).ToList()));
            WorkloadEnded?.Invoke(words[1]);
        }
    }

    private static (string, string) Field(string w)
    {
        int eq = w.IndexOf('=');
        return eq < 0 ? (w, "") : (w[..eq], w[(eq + 1)..]);
    }

    /// <summary>One table row per result line (workload, then its key=value pairs), to stderr; title: the configuration, when several ran.</summary>
    public void PrintSummary(string? title = null)
    {
        if (Results.Count == 0 && Workloads.Count == 0) return;
        // Workloads report different keys: one measurements column keeps the table narrow.
        var table = new Table().AddColumn("workload").AddColumn("exit").AddColumn(new TableColumn("guest time").RightAligned()).AddColumn("measurements");
        if (title is not null) table.Title = new TableTitle(Markup.Escape(title));
        static string Get(List<(string Key, string Value)> f, string key) => f.FirstOrDefault(x => x.Key == key).Value ?? "";
        var ran = Workloads.Select(w => w.Workload).ToList();
        // A result named <workload>_<part> (fileserver_perf) is shown in its workload's row.
        var names = ran.Concat(Results.Select(r => r.Workload)
            .Where(r => !ran.Any(w => r == w || r.StartsWith(w + "_", StringComparison.Ordinal)))).Distinct();
        foreach (var name in names)
        {
            var run = Workloads.FirstOrDefault(w => w.Workload == name).Fields ?? [];
            var measured = Results.Where(r => r.Workload == name || r.Workload.StartsWith(name + "_", StringComparison.Ordinal))
                .Select(r => (r.Workload == name ? "" : r.Workload[(name.Length + 1)..] + ": ") + string.Join("  ", r.Fields.Select(f => $"{f.Key}={f.Value}")));
            string time = long.TryParse(Get(run, "time"), out long t) ? t.ToString("N0") : "";
            table.AddRow(Markup.Escape(name), Markup.Escape(Get(run, "exit")), time, Markup.Escape(string.Join("\n", measured)));
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Write(table);
    }

    public override void Flush() => inner.Flush();
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
