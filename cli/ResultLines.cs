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
    }

    private static (string, string) Field(string w)
    {
        int eq = w.IndexOf('=');
        return eq < 0 ? (w, "") : (w[..eq], w[(eq + 1)..]);
    }

    /// <summary>One table row per result line (workload, then its key=value pairs), to stderr.</summary>
    public void PrintSummary()
    {
        if (Results.Count == 0) return;
        // Workloads report different keys: one measurements column keeps the table narrow.
        var table = new Table().AddColumn("workload").AddColumn("measurements");
        foreach (var (workload, fields) in Results)
            table.AddRow(Markup.Escape(workload), Markup.Escape(string.Join("  ", fields.Select(f => $"{f.Key}={f.Value}"))));
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
