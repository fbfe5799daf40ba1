using System.Text;
using Harness.Smp.Cpu;
using Harness.Properties.Generators;

namespace Harness.Properties.Run;

/// <summary>
/// One comparison of two runs of the same program, printed as one table: how each ended, the
/// console, each vCPU's saved registers and flags by name, the counters, and the other words of
/// the data region that differ (at most a screenful).
/// </summary>
public static class StateDiff
{
    private const int MaxWords = 24;
    private static readonly string[] names = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

    /// <summary>Null when a and b agree; else the differences (a first, b second).</summary>
    public static string? Compare(GuestProgram p, RunOutcome a, string aName, RunOutcome b, string bName)
    {
        var sb = new StringBuilder();
        void Row(string what, string x, string y) => sb.AppendLine($"  {what,-22} {x,-24} {y}");
        string End(RunOutcome o) => o.Result.Reason == StopReason.Exited ? $"exit {o.Result.ExitStatus}" : $"{o.Result.Reason}";
        if (End(a) != End(b)) Row("end", End(a), End(b));
        if (a.Console != b.Console) Row("console", Quote(a.Console), Quote(b.Console));
        var seen = new HashSet<ulong>();
        for (int n = 0; n < p.Vcpus; n++)
        {
            ulong page = Layout.Private(n);
            for (int g = 0; g < 16; g++)
            {
                if (g == 4) continue;
                ulong at = page + Layout.SaveArea + (ulong)g * 8;
                seen.Add(at);
                if (a.Word(at) != b.Word(at)) Row($"vcpu{n} {names[g]}", $"{a.Word(at):x16}", $"{b.Word(at):x16}");
            }
            ulong f = page + Layout.SavedFlags;
            seen.Add(f);
            ulong fa = a.Word(f) & ~(Rflags.RF | Rflags.VM), fb = b.Word(f) & ~(Rflags.RF | Rflags.VM);
            if (fa != fb) Row($"vcpu{n} rflags", Flags(fa), Flags(fb));
            foreach (var (what, off) in new[] { ("ticks", Layout.Ticks), ("faults fixed", Layout.Faults), ("handler cell", Layout.HandlerCell), ("probes taken", Layout.Probes) })
            {
                ulong at = page + (ulong)off;
                seen.Add(at);
                if (a.Word(at) != b.Word(at)) Row($"vcpu{n} {what}", $"{a.Word(at)}", $"{b.Word(at)}");
            }
        }
        int words = 0, more = 0;
        for (ulong at = RunOutcome.DataStart; at < RunOutcome.DataStart + RunOutcome.DataBytes; at += 8)
        {
            if (seen.Contains(at) || a.Word(at) == b.Word(at)) continue;
            if (words++ < MaxWords) Row($"[{Where(at)}]", $"{a.Word(at):x16}", $"{b.Word(at):x16}");
            else more++;
        }
        if (more > 0) sb.AppendLine($"  ... and {more} more words");
        if (sb.Length == 0) return null;
        return $"  {"",-22} {aName,-24} {bName}\n" + sb;
    }

    private static string Where(ulong at)
    {
        if (at >= Layout.Shared) return $"shared+0x{at - Layout.Shared:x}";
        if (at < Layout.Private(0)) return $"done flags+0x{at - Layout.Data:x}";
        int n = (int)((at - Layout.Private(0)) / 0x1000);
        return $"vcpu{n} page+0x{at - Layout.Private(n):x}";
    }

    public static string Flags(ulong f)
    {
        var parts = new List<string>();
        foreach (var (bit, name) in new[] { (Rflags.CF, "CF"), (Rflags.PF, "PF"), (Rflags.AF, "AF"), (Rflags.ZF, "ZF"), (Rflags.SF, "SF"), (Rflags.IF, "IF"), (Rflags.DF, "DF"), (Rflags.OF, "OF") })
            if ((f & bit) != 0) parts.Add(name);
        return $"{f:x} ({string.Join(' ', parts)})";
    }

    private static string Quote(string s) => s.Length > 20 ? $"\"{s[..20]}...\" ({s.Length} chars)" : $"\"{s}\"";
}
