using Harness.Dbt.Kernel;

namespace Harness.Verification.Generic;

/// <summary>RIP to "function+0xoff" from a kernel's sized symbols (empty when no function holds it).</summary>
public static class Symbolizer
{
    public static Func<ulong, string> For(KernelImage k)
    {
        var functions = k.Symbols.Select(s => (Name: s.Key, Range: k.Range(s.Key))).Where(s => s.Range is not null)
            .Select(s => (s.Name, s.Range!.Value.Start, s.Range.Value.End)).OrderBy(s => s.Start).ToArray();
        return rip =>
        {
            int lo = 0, hi = functions.Length - 1, found = -1;
            while (lo <= hi)
            {
                int mid = (lo + hi) / 2;
                if (functions[mid].Start <= rip) { found = mid; lo = mid + 1; } else hi = mid - 1;
            }
            return found >= 0 && rip < functions[found].End ? $"{functions[found].Name}+0x{rip - functions[found].Start:x}" : "";
        };
    }
}
