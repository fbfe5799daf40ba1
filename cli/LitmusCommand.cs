using System.CommandLine;
using System.Diagnostics;
using Harness.Smp.Memory;
using Harness.Verification.Litmus;

namespace Harness.Cli;

/// <summary>
/// `harness litmus FILE|DIR...`: runs x86 litmus tests (herd/litmus7 format) as ring-0 code on
/// the machine under x86-TSO and prints, per test, herd7's report (the final states, the witness
/// counts, the `Observation NAME Never|Sometimes|Always P N` line). Exhaustive by default;
/// `--iterations N` samples N executions under Coyote instead. With `--verdicts FILE`
/// (path TAB verdict, as ../shared/litmus-x86/verdicts.tsv) each verdict is compared with herd's.
/// Exit 0 when every test ran (and every verdict matched), 1 on a mismatch, 2 bad input.
/// </summary>
internal static class LitmusCommand
{
    public static Command Create()
    {
        var files = new Argument<FileSystemInfo[]>("files") { Description = "litmus files, or directories searched for *.litmus", Arity = ArgumentArity.OneOrMore };
        var iterations = new Option<int?>("--iterations") { Description = "sample this many executions under Coyote instead of enumerating them all" };
        var exhaustive = new Option<bool>("--exhaustive") { Description = "enumerate every execution (the default)" };
        var seed = new Option<uint>("--seed") { Description = "seed of Coyote's choices with --iterations", DefaultValueFactory = _ => 1 };
        var model = new Option<string>("--model") { Description = "memory model: tso (store buffers) or sc (every store visible at once)", DefaultValueFactory = _ => "tso" };
        model.AcceptOnlyFromAmong("tso", "sc");
        var verdicts = new Option<FileInfo?>("--verdicts") { Description = "a TSV of path<TAB>Never|Sometimes|Always (herd's verdicts) to compare with; paths relative to the TSV's directory" };
        var brief = new Option<bool>("--brief") { Description = "print only each test's Observation line (diff it against herd's)" };
        var cmd = new Command("litmus", "run x86 litmus tests on the machine under x86-TSO and print herd7's observation lines (docs/tso.md)")
        {
            files, iterations, exhaustive, seed, model, verdicts, brief,
        };
        cmd.SetAction((r, ct) => Task.FromResult(Run(r.GetValue(files)!, r.GetValue(iterations), r.GetValue(exhaustive), r.GetValue(seed),
            r.GetValue(model) == "sc" ? MemoryModel.Sc : MemoryModel.Tso, r.GetValue(verdicts), r.GetValue(brief), ct)));
        return cmd;
    }

    private static int Run(FileSystemInfo[] inputs, int? iterations, bool exhaustive, uint seed, MemoryModel model, FileInfo? verdictFile, bool brief, CancellationToken ct)
    {
        if (iterations is { } n && exhaustive) return Bad("--iterations and --exhaustive exclude each other");
        if (iterations is <= 0) return Bad("--iterations must be positive");
        var paths = new List<string>();
        foreach (var f in inputs)
        {
            if (f is DirectoryInfo d && d.Exists) paths.AddRange(Directory.EnumerateFiles(d.FullName, "*.litmus", SearchOption.AllDirectories).Order(StringComparer.Ordinal));
            else if (File.Exists(f.FullName)) paths.Add(f.FullName);
            else return Bad($"{f}: no such file or directory");
        }
        if (paths.Count == 0) return Bad("no *.litmus files found");

        Dictionary<string, LitmusVerdict>? expected = null;
        if (verdictFile is not null)
        {
            try { expected = ReadVerdicts(verdictFile); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return Bad(e.Message); }
        }

        int ran = 0, bad = 0, matched = 0, mismatched = 0, unknown = 0;
        long explored = 0;
        var counts = new Dictionary<LitmusVerdict, int>();
        var sw = Stopwatch.StartNew();
        foreach (var path in paths)
        {
            if (ct.IsCancellationRequested) { Console.Error.WriteLine("litmus: interrupted"); break; }
            LitmusResult result;
            try
            {
                var test = LitmusParser.ParseFile(path);
                result = iterations is { } it ? LitmusRunner.Sample(test, it, seed, model) : LitmusRunner.Exhaustive(test, model);
            }
            catch (Exception e) when (e is LitmusException or LitmusRunException)
            {
                Console.Error.WriteLine($"harness: {e.Message}");
                bad++;
                continue;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // A test the runner failed on in a way it does not know: named, counted as not run,
                // and the other files still run.
                Console.Error.WriteLine($"harness: {path}: the runner failed ({e.GetType().Name}): {e.Message}");
                bad++;
                continue;
            }
            ran++;
            explored += result.Explored;
            counts[result.Verdict] = counts.GetValueOrDefault(result.Verdict) + 1;
            Console.Write(brief ? result.ObservationLine + "\n" : result.HerdText() + "\n");
            if (expected is not null)
            {
                if (!expected.TryGetValue(Path.GetFullPath(path), out var want)) unknown++;
                else if (want == result.Verdict) matched++;
                else
                {
                    mismatched++;
                    Console.Error.WriteLine($"harness: {path}: verdict {result.Verdict}, expected {want}");
                }
            }
        }
        sw.Stop();
        double secs = sw.Elapsed.TotalSeconds;
        string how = iterations is { } k ? $"{k} Coyote iterations each (seed {seed})" : "exhaustive";
        Console.WriteLine($"litmus: {ran} tests run ({how}, {(model == MemoryModel.Tso ? "x86-TSO" : "SC")}), {bad} not run; " +
            $"{counts.GetValueOrDefault(LitmusVerdict.Never)} Never, {counts.GetValueOrDefault(LitmusVerdict.Sometimes)} Sometimes, {counts.GetValueOrDefault(LitmusVerdict.Always)} Always; " +
            $"{explored:N0} {(iterations is null ? "states" : "executions")}; {secs:F1} s, {(secs > 0 ? ran / secs : 0):F1} tests/s");
        if (expected is not null)
            Console.WriteLine($"litmus: verdicts: {matched} of {matched + mismatched} match {verdictFile!.Name}{(unknown > 0 ? $" ({unknown} tests not in {verdictFile!.Name})" : "")}");
        return bad > 0 ? 2 : mismatched > 0 ? 1 : 0;
    }

    private static Dictionary<string, LitmusVerdict> ReadVerdicts(FileInfo file)
    {
        var d = new Dictionary<string, LitmusVerdict>();
        string dir = file.DirectoryName ?? ".";
        int line = 0;
        foreach (var text in File.ReadLines(file.FullName))
        {
            line++;
            if (text.Trim().Length == 0 || text.StartsWith('#')) continue;
            var parts = text.Split('\t');
            if (parts.Length != 2 || !Enum.TryParse(parts[1].Trim(), out LitmusVerdict v))
                throw new FormatException($"{file.FullName}:{line}: expected 'path<TAB>Never|Sometimes|Always', found '{text}'");
            d[Path.GetFullPath(Path.Combine(dir, parts[0].Trim()))] = v;
        }
        return d;
    }

    private static int Bad(string message)
    {
        Console.Error.WriteLine($"harness: {message}");
        Console.Error.WriteLine("harness: see 'harness litmus --help'");
        return ExitCodes.BadInput;
    }
}
