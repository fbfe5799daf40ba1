using System.Diagnostics;
using System.Globalization;
using FsCheck;
using FsCheck.Fluent;
using Harness.Properties.Generators;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Harness.Properties;

/// <summary>
/// FsCheck's replay seed: (Seed, Gamma) starts a whole run over again (the same cases in the same
/// order, given the same MaxTest); with a Size it runs the one case that seed and size generate (a
/// failing case's own seed: the failure is the first test) and shrinks it again.
/// </summary>
public readonly record struct ReplaySeed(ulong Seed, ulong Gamma, int? Size = null)
{
    public override string ToString() => Size is { } s ? $"({Seed},{Gamma},{s})" : $"({Seed},{Gamma})";

    /// <summary>Parses "(seed,gamma)" or "(seed,gamma,size)"; the gamma must be odd (FsCheck's generator needs it).</summary>
    public static ReplaySeed Parse(string text)
    {
        var t = text.Trim();
        if (!(t.StartsWith('(') && t.EndsWith(')')))
            throw new FormatException($"--replay \"{text}\": expected (seed,gamma) or (seed,gamma,size), e.g. \"(12345,678901)\"");
        var parts = t[1..^1].Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length is not (2 or 3))
            throw new FormatException($"--replay \"{text}\": expected two or three numbers, (seed,gamma) or (seed,gamma,size); got {parts.Length}");
        if (!ulong.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out ulong seed))
            throw new FormatException($"--replay \"{text}\": the seed '{parts[0]}' is not an unsigned 64-bit integer");
        if (!ulong.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out ulong gamma))
            throw new FormatException($"--replay \"{text}\": the gamma '{parts[1]}' is not an unsigned 64-bit integer");
        if (gamma % 2 == 0) throw new FormatException($"--replay \"{text}\": the gamma ({gamma}) must be odd");
        int? size = null;
        if (parts.Length == 3)
        {
            if (!int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out int s) || s > 10_000)
                throw new FormatException($"--replay \"{text}\": the size '{parts[2]}' is not an integer in 0..10000");
            size = s;
        }
        return new ReplaySeed(seed, gamma, size);
    }
}

/// <summary>How a property is run: the number of cases, a replay seed, a progress callback (cases so far, shrinks so far).</summary>
public sealed record CheckOptions
{
    public int MaxTest { get; init; } = 100;
    public ReplaySeed? Replay { get; init; }
    public Action<int, int>? Progress { get; init; }
    /// <summary>Stop after this many shrink steps (FsCheck's own cap is 5000).</summary>
    public int MaxShrinks { get; init; } = 2000;
    /// <summary>Check generated cases on this many threads (FsCheck's parallel runner: the same cases, the first failure in order is the one reported and shrunk).</summary>
    public int Threads { get; init; } = 1;
    /// <summary>Cancelled: the remaining cases are skipped (FsCheck cannot be stopped, and an exception would be taken for a failure and shrunk).</summary>
    public CancellationToken Cancel { get; init; }
}

/// <summary>What one property run found.</summary>
public sealed record CheckReport(string Property, Setting Setting, bool Passed, int Tests, int Shrinks, Case? Original, Case? Shrunk, string? Failure,
    ReplaySeed? RunSeed, ReplaySeed? CaseSeed, TimeSpan Elapsed, TimeSpan ToFailure, TimeSpan ShrinkTime)
{
    /// <summary>The shrunk program's length: the instructions its pieces emitted (the fixed prologue, save area and handlers not counted).</summary>
    public int ShrunkInstructions => Shrunk?.Program.Image.PieceInstructions ?? 0;

    /// <summary>The generated cases' mean size: their pieces' instructions (the scaffolding not counted).</summary>
    public double MeanPieceInstructions { get; init; }

    /// <summary>Cases checked per second before the first failure (or over the whole run).</summary>
    public double CasesPerSecond => Tests / Math.Max(1e-9, (Passed ? Elapsed : ToFailure).TotalSeconds);
}

/// <summary>Runs a <see cref="PropertyDef"/> under FsCheck: generation from a seed, shrinking to the smallest failing case.</summary>
public static class PropertyRunner
{
    /// <summary>The gamma of survey run seeds (i, SurveyGamma), i = 1, 2, ... (odd, well mixed: the golden-ratio increment).</summary>
    public const ulong SurveyGamma = 11400714819323198485;

    /// <summary>Cases of a property: a program from a seed FsCheck draws (and the size), and the property's knob; shrinking by <see cref="ProgramGen.Shrink"/>.</summary>
    public static Arbitrary<Case> Cases(PropertyDef def, GenOptions generation) =>
        Arb.From(
            Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed =>
            {
                var r = new Rng((ulong)seed * 0x9E37_79B9_7F4A_7C15UL + (ulong)size);
                var program = ProgramGen.Random(r, generation, Math.Max(size, 5));
                return new Case(program, def.Knob?.Invoke(r) ?? 0);
            })),
            c => ProgramGen.Shrink(c.Program).Select(p => c with { Program = p, IsShrink = true })
                .Concat((def.ShrinkKnob?.Invoke(c.Knob) ?? []).Select(k => c with { Knob = k, IsShrink = true })));

    /// <summary>The check, with a thrown exception reported as a failure (type, message, stack).</summary>
    public static string? Safe(PropertyDef def, Case c, Setting s)
    {
        try { return def.Check(c, s); }
        catch (Exception e) { return $"the check threw {e.GetType().Name}: {e.Message}\n{e.StackTrace}"; }
    }

    public static CheckReport Run(PropertyDef def, Setting setting, CheckOptions options, GenOptions? generation = null)
    {
        int tests = 0, shrinks = 0, failures = 0;
        long pieceInstructions = 0;
        var clock = Stopwatch.StartNew();
        long firstFailureTicks = long.MaxValue;
        var property = Prop.ForAll(Cases(def, generation ?? def.Generation), (Case c) =>
        {
            // FsCheck's own cap (5000 shrinks) can take minutes on slow cases: stop earlier by
            // accepting every further candidate (the smallest failure so far stays the result).
            if (c.IsShrink && Volatile.Read(ref shrinks) >= options.MaxShrinks || options.Cancel.IsCancellationRequested) return true;
            // After the first failure, generated cases still running on other threads are not needed.
            if (!c.IsShrink && Volatile.Read(ref failures) > 0) return true;
            bool ok = Safe(def, c, setting) is null;
            if (c.IsShrink) Interlocked.Increment(ref shrinks);
            else
            {
                Interlocked.Increment(ref tests);
                Interlocked.Add(ref pieceInstructions, c.Program.Image.PieceInstructions);
                if (!ok && Interlocked.Increment(ref failures) == 1) Interlocked.CompareExchange(ref firstFailureTicks, clock.Elapsed.Ticks, long.MaxValue);
            }
            options.Progress?.Invoke(Volatile.Read(ref tests), Volatile.Read(ref shrinks));
            return ok;
        });
        var runner = new Capture();
        var config = Config.Quick.WithMaxTest(options.MaxTest).WithRunner(runner).WithQuietOnSuccess(true);
        if (options.Threads > 1) config = config.WithParallelRunConfig(FSharpOption<ParallelRunConfig>.Some(new ParallelRunConfig(options.Threads)));
        if (options.Replay is { } rp)
            config = config.WithReplay(FSharpOption<Replay>.Some(new Replay(new Rnd(rp.Seed, rp.Gamma),
                rp.Size is { } size ? FSharpOption<int>.Some(size) : FSharpOption<int>.None)));
        Check.One(config, property);
        clock.Stop();
        // Interrupted while shrinking: the smallest failure so far is still the result.
        if (runner.Result is not TestResult.Failed) options.Cancel.ThrowIfCancellationRequested();
        if (runner.Result is TestResult.Failed f)
        {
            var original = f.Item2.Head as Case;
            var shrunk = f.Item3.Head as Case ?? original;
            string failure = shrunk is null ? "a case failed" : Safe(def, shrunk, setting) ?? "the shrunk case passed when re-run (a nondeterministic check)";
            var toFailure = firstFailureTicks == long.MaxValue ? clock.Elapsed : TimeSpan.FromTicks(firstFailureTicks);
            // The case FsCheck reports is the first failing one in generation order: its number.
            return new CheckReport(def.Name, setting, Passed: false, f.Item1.NumberOfTests, f.Item1.NumberOfShrinks, original, shrunk, failure,
                new ReplaySeed(f.Item5.Seed, f.Item5.Gamma), new ReplaySeed(f.Item6.Seed, f.Item6.Gamma, f.Item7),
                clock.Elapsed, toFailure, clock.Elapsed - toFailure) { MeanPieceInstructions = (double)pieceInstructions / Math.Max(1, tests) };
        }
        return new CheckReport(def.Name, setting, Passed: true, tests, 0, null, null, null, null, null, clock.Elapsed, TimeSpan.Zero, TimeSpan.Zero)
            { MeanPieceInstructions = (double)pieceInstructions / Math.Max(1, tests) };
    }

    private sealed class Capture : IRunner
    {
        public TestResult? Result;
        public void OnStartFixture(Type t) { }
        public void OnArguments(int ntest, FSharpList<object> args, FSharpFunc<int, FSharpFunc<FSharpList<object>, string>> every) { }
        public void OnShrink(FSharpList<object> args, FSharpFunc<FSharpList<object>, string> everyShrink) { }
        public void OnFinished(string name, TestResult result) => Result = result;
    }
}
