using Harness.Dbt.Cache;
using Harness.Dbt.Translate;

namespace Harness.Dbt.Reports;

/// <summary>What translating the whole kernel text costs: the static size of the translation.</summary>
public sealed record WholeImageReport
{
    public required string Configuration { get; init; }
    /// <summary>FUNC symbols in the text, and how many of them got a translation of their first block.</summary>
    public required int Functions { get; init; }
    public required int FunctionsTranslated { get; init; }
    /// <summary>Interrupt gates translated in entry mode (the shadow IDT's targets).</summary>
    public required int Gates { get; init; }
    public required long Blocks { get; init; }
    public required long EntryBlocks { get; init; }
    public required long NativeInstructions { get; init; }
    /// <summary>Native bytes over all blocks (a byte in two overlapping blocks counts twice).</summary>
    public required long NativeBytes { get; init; }
    /// <summary>Main-pool bytes of the blocks (16-byte alignment padding between blocks not included).</summary>
    public required long CacheBytes { get; init; }
    public double Expansion => NativeBytes == 0 ? 0 : (double)CacheBytes / NativeBytes;
    public required long EdgeStubs { get; init; }
    public required long EdgeStubBytes { get; init; }
    /// <summary>Edge stubs whose target was translated later in the walk: a run would chain them on first use.</summary>
    public required long EdgesToTranslatedCode { get; init; }
    public required long CallOutStubs { get; init; }
    public required long TextBytes { get; init; }
    /// <summary>Sum of the FUNC symbols' sizes (the text without alignment padding).</summary>
    public required long FunctionBytes { get; init; }
    /// <summary>Function bytes inside at least one translated block.</summary>
    public required long CoveredBytes { get; init; }
    public double Coverage => FunctionBytes == 0 ? 0 : (double)CoveredBytes / FunctionBytes;
    /// <summary>Native bytes translated per distinct byte covered: blocks overlap where a branch enters the middle of one.</summary>
    public double Duplication => CoveredBytes == 0 ? 0 : (double)NativeBytes / CoveredBytes;
    public required int ExceptionTableEntries { get; init; }
    /// <summary>Native instructions per translation rule (static: each translated copy counted once).</summary>
    public required IReadOnlyDictionary<string, long> RuleCounts { get; init; }
    /// <summary>Roots or edge targets that could not be translated, with the translator's reason.</summary>
    public required IReadOnlyList<(string Where, string Why)> Untranslatable { get; init; }
}

/// <summary>
/// Translates the whole kernel text without running it (<see cref="StaticTranslation"/>): every
/// interrupt gate of isr_stubs in entry mode, as the shadow IDT would, then every function symbol,
/// then every target of every edge stub those blocks made, until no new direct target is left (a
/// closure over direct branches, calls and call-out continuations; indirect targets such as switch
/// cases are reached only if a symbol or a direct branch leads there). Roots go in address order,
/// so the report is reproducible.
/// </summary>
public static class WholeImageTranslation
{
    public static WholeImageReport Translate(byte[] elf, string name, DbtOptions? options = null)
    {
        using var t = new StaticTranslation(elf, name, options);
        var translator = t.Dbt.Translator;
        var failed = new List<(string, string)>();
        var attempted = new HashSet<ulong>();
        bool Try(ulong at, Func<ulong> translate)
        {
            try { translate(); return true; }
            catch (Exception e) when (e is TranslationException or CodeCacheFullException)
            {
                failed.Add((t.Symbols.Name(at) ?? $"0x{at:x}", e.Message));
                return false;
            }
        }

        int gates = 0;
        if (t.Symbols.Address("isr_stubs") is ulong stubs)
            for (int vector = 0; vector < 256; vector++)
            {
                ulong gate = stubs + (ulong)vector * 16;
                if (t.Symbols.InText(gate) && Try(gate, () => t.TranslateGate(gate, vector))) gates++;
            }

        var functions = t.Symbols.Functions.ToList();
        int functionsTranslated = 0;
        foreach (var f in functions)
            if (attempted.Add(f.Value) && Try(f.Value, () => t.Translate(f.Value))) functionsTranslated++;

        // The closure: edge targets, and the return addresses of calls that end a block (no-callret:
        // the callee's ret reaches them through the jumptable, so no edge names them).
        int seenEdges = 0, seenBlocks = 0;
        while (true)
        {
            var edges = t.Edges().ToList();
            var made = translator.Blocks;
            if (edges.Count == seenEdges && made.Count == seenBlocks) break;
            var targets = edges.Skip(seenEdges).Select(e => e.Target).ToList();
            foreach (var b in made.Skip(seenBlocks))
                if (GoldenBlocks.Decode(t, b.NativeStart, b.NativeEnd).LastOrDefault() is { Length: > 0 } last
                    && last.FlowControl is Iced.Intel.FlowControl.Call or Iced.Intel.FlowControl.IndirectCall)
                    targets.Add(last.NextIP);
            (seenEdges, seenBlocks) = (edges.Count, made.Count);
            foreach (ulong target in targets)
                if (t.Symbols.InText(target) && attempted.Add(target) && !translator.TryLookup(target, out _))
                    Try(target, () => t.Translate(target));
        }

        var blocks = translator.Blocks;
        var allEdges = t.Edges().ToList();
        var stats = t.Dbt.Stats;
        var rules = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var b in blocks)
            foreach (var ins in GoldenBlocks.Decode(t, b.NativeStart, b.NativeEnd))
            {
                string rule = RuleName(ins, t.Dbt.Options);
                rules[rule] = rules.GetValueOrDefault(rule) + 1;
            }

        return new WholeImageReport
        {
            Configuration = t.Dbt.Options.Name,
            Functions = functions.Count,
            FunctionsTranslated = functionsTranslated,
            Gates = gates,
            Blocks = blocks.Count,
            EntryBlocks = blocks.Count(b => b.EntrySlotDelta is not null),
            NativeInstructions = stats.NativeInstructions,
            NativeBytes = stats.NativeBytes,
            CacheBytes = stats.CacheBytes,
            EdgeStubs = stats.EdgeStubs,
            EdgeStubBytes = stats.EdgeStubBytes,
            EdgesToTranslatedCode = allEdges.Count(e => e.Kind != Dispatch.EdgeKind.CallOut && translator.TryLookup(e.Target, out _)),
            CallOutStubs = allEdges.Count(e => e.Kind == Dispatch.EdgeKind.CallOut),
            TextBytes = (long)(t.Symbols.TextEnd - t.Symbols.TextStart),
            FunctionBytes = functions.Sum(f => (long)f.Size),
            CoveredBytes = Covered(blocks, functions),
            ExceptionTableEntries = t.Dbt.ExceptionTables.Count,
            RuleCounts = rules,
            Untranslatable = failed,
        };
    }

    // The rulebook's choice for an instruction; the one place reports depend on its shape.
    private static string RuleName(in Iced.Intel.Instruction ins, DbtOptions options) => Rulebook.For(ins, options).Name;

    private static long Covered(IReadOnlyList<TranslatedBlock> blocks, IReadOnlyList<ElfSymbol> functions)
    {
        var ranges = blocks.Select(b => (b.NativeStart, b.NativeEnd)).OrderBy(r => r.NativeStart).ToList();
        var merged = new List<(ulong Start, ulong End)>();
        foreach (var (s, e) in ranges)
        {
            if (merged.Count > 0 && s <= merged[^1].End) merged[^1] = (merged[^1].Start, Math.Max(merged[^1].End, e));
            else merged.Add((s, e));
        }
        long covered = 0;
        foreach (var f in functions)
            foreach (var (s, e) in merged)
            {
                ulong lo = Math.Max(s, f.Value), hi = Math.Min(e, f.Value + f.Size);
                if (hi > lo) covered += (long)(hi - lo);
            }
        return covered;
    }
}
