using System.Net;
using System.Text;
using Harness.Smp;
using Iced.Intel;

namespace Harness.Verification.Generic;

/// <summary>One recorded event of a replayed execution: a scheduling point or an interrupt/exception delivery on one vCPU.</summary>
public sealed record TraceEvent(long Seq, int Vcpu, string Kind, string What, ulong Rip, string Where, IReadOnlyList<string> Code);

/// <summary>
/// Records what a replay of a failing execution did, for `harness report`: every scheduling point
/// (kind, address) and every interrupt or exception delivery, per vCPU, with the instructions at
/// the vCPU's RIP disassembled and code-cache addresses mapped back to the native instruction and
/// the rule that emitted them. The last <see cref="Keep"/> events are kept (a failure is at the
/// end); the counts cover all of them.
/// </summary>
public sealed class TraceRecorder
{
    public const int Keep = 400;
    private readonly object gate = new();
    private readonly Queue<TraceEvent> events = new();
    private long seq;
    private Func<ulong, string> symbolize = rip => "";

    public long Points { get; private set; }
    public long Deliveries { get; private set; }
    public int Vcpus { get; private set; }

    /// <summary>Attaches to the replayed execution's control and machine (Scenario.Observe).</summary>
    public void Attach(CoyoteControl control, Machine m)
    {
        Vcpus = m.Vcpus.Length;
        symbolize = Symbols is { } k ? Symbolizer.For(k) : _ => "";
        var previousPoint = control.OnPoint;
        control.OnPoint = (v, kind, address) =>
        {
            previousPoint?.Invoke(v, kind, address);
            lock (gate) Points++;
            Add(v, m, "point", $"{kind.ToString().ToLowerInvariant()} 0x{address:x}");
        };
        m.Attach(new HookAgent
        {
            OnEventDelivering = (v, vector, raised, rip) =>
            {
                lock (gate) Deliveries++;
                Add(v, m, raised ? "exception" : "interrupt", $"{(raised ? "exception" : "interrupt")} vector {vector}", rip);
            },
        });
    }

    /// <summary>Symbols for the report: the kernel's, when the scenario gave the recorder a symbol source.</summary>
    public Harness.Dbt.Kernel.KernelImage? Symbols { get; set; }

    private void Add(Vcpu v, Machine m, string kind, string what, ulong? at = null)
    {
        ulong rip = at ?? v.CurrentRip;
        string where;
        if (m.OriginOf(rip) is { } o)
        {
            string sym = symbolize(o.NativeRip);
            where = $"cache 0x{rip:x} = native 0x{o.NativeRip:x}{(sym.Length > 0 ? $" <{sym}>" : "")}, rule {o.Rule}";
        }
        else
        {
            string sym = symbolize(rip);
            where = $"0x{rip:x}{(sym.Length > 0 ? $" <{sym}>" : "")}";
        }
        var code = Disassemble(v, rip);
        lock (gate)
        {
            events.Enqueue(new TraceEvent(++seq, v.Index, kind, what, rip, where, code));
            while (events.Count > Keep) events.Dequeue();
        }
    }

    /// <summary>The instructions at rip (three), read through the vCPU's own page tables.</summary>
    private static IReadOnlyList<string> Disassemble(Vcpu v, ulong rip)
    {
        var bytes = new byte[32];
        int n = 0;
        try
        {
            for (; n < bytes.Length; n += 8) BitConverter.TryWriteBytes(bytes.AsSpan(n), v.Read64(rip + (ulong)n));
        }
        catch (Exception) when (n > 0) { }
        catch (Exception) { return ["(code not readable)"]; }
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(bytes, 0, n), rip);
        var f = new IntelFormatter();
        f.Options.UppercaseHex = false;
        var lines = new List<string>();
        for (int i = 0; i < 3 && decoder.IP < rip + (ulong)n - 15; i++)
        {
            decoder.Decode(out var ins);
            var o = new StringOutput();
            f.Format(ins, o);
            lines.Add($"{ins.IP:x16}  {o.ToStringAndReset()}");
            if (ins.Code == Code.INVALID) break;
        }
        return lines;
    }

    public IReadOnlyList<TraceEvent> Events { get { lock (gate) return events.ToList(); } }
    public long Total { get { lock (gate) return seq; } }
}

/// <summary>The report of one trace: the scenario, the failure, how to replay it, and the recorded events per vCPU.</summary>
public sealed record TraceReportData(string Scenario, string TracePath, string ReplayCommand, string RecordedFailure, bool Reproduced, string? Failure,
    int Vcpus, long TotalEvents, long Points, long Deliveries, IReadOnlyList<TraceEvent> Events)
{
    public string Text()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"scenario: {Scenario}");
        sb.AppendLine($"trace: {TracePath}");
        sb.AppendLine($"replay: {ReplayCommand}");
        sb.AppendLine(Reproduced ? "the replay reproduced the failure:" : "the replay did NOT reproduce the failure; recorded:");
        sb.AppendLine(Indent(Reproduced ? Failure ?? "" : RecordedFailure));
        sb.AppendLine($"events: {TotalEvents:N0} ({Points:N0} scheduling points, {Deliveries:N0} interrupt and exception deliveries); the last {Events.Count} follow, oldest first");
        foreach (var e in Events)
        {
            sb.AppendLine($"#{e.Seq,-8} vCPU {e.Vcpu}  {e.What}  at {e.Where}");
            foreach (var c in e.Code) sb.AppendLine($"             {c}");
        }
        return sb.ToString();
    }

    private static string Indent(string s) => string.Join('\n', s.TrimEnd().Split('\n').Select(l => "  " + l));

    /// <summary>A self-contained page: the failure and the replay command on top, then one lane per vCPU, events in time order.</summary>
    public string Html()
    {
        static string H(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>harness report: ").Append(H(Scenario)).Append("</title><style>");
        sb.Append("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}pre{margin:0;font-family:ui-monospace,monospace;font-size:12px}");
        sb.Append(".failure{background:#fdecea;border:1px solid #e0a0a0;padding:.8em;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}");
        sb.Append(".cmd{background:#eef;padding:.5em;font-family:ui-monospace,monospace}table{border-collapse:collapse;width:100%;margin-top:1em}");
        sb.Append("th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f4f4f4;position:sticky;top:0}");
        sb.Append("td.seq{color:#888;font-size:11px;white-space:nowrap}.interrupt{background:#fff6d5}.exception{background:#ffe3e3}.point{background:#f7fbff}");
        sb.Append(".what{font-weight:600}.where{color:#555;font-size:11px}</style></head><body>");
        sb.Append("<h1>harness report: ").Append(H(Scenario)).Append("</h1>");
        sb.Append("<p>trace <code>").Append(H(TracePath)).Append("</code>; replay with</p><div class=\"cmd\" id=\"replay\">").Append(H(ReplayCommand)).Append("</div>");
        sb.Append("<h2>Failure</h2><p>").Append(Reproduced ? "The replay reproduced it:" : "The replay did <b>not</b> reproduce it; recorded:").Append("</p>");
        sb.Append("<div class=\"failure\" id=\"failure\">").Append(H(Reproduced ? Failure ?? "" : RecordedFailure)).Append("</div>");
        sb.Append("<h2>Execution</h2><p>").Append($"{TotalEvents:N0} events ({Points:N0} scheduling points, {Deliveries:N0} interrupt and exception deliveries); the last {Events.Count}, oldest first, one lane per vCPU.").Append("</p>");
        sb.Append("<table><thead><tr><th>#</th>");
        for (int v = 0; v < Vcpus; v++) sb.Append("<th>vCPU ").Append(v).Append("</th>");
        sb.Append("</tr></thead><tbody>");
        foreach (var e in Events)
        {
            sb.Append("<tr><td class=\"seq\">").Append(e.Seq).Append("</td>");
            for (int v = 0; v < Vcpus; v++)
            {
                if (v != e.Vcpu) { sb.Append("<td></td>"); continue; }
                sb.Append("<td class=\"").Append(e.Kind).Append("\"><div class=\"what\">").Append(H(e.What)).Append("</div><div class=\"where\">").Append(H(e.Where)).Append("</div><pre>");
                sb.Append(H(string.Join('\n', e.Code))).Append("</pre></td>");
            }
            sb.Append("</tr>");
        }
        sb.Append("</tbody></table></body></html>");
        return sb.ToString();
    }
}
