using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using Harness.Properties.Generators;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Harness.Properties;

/// <summary>How a property is run: the number of cases, a replay seed, a progress callback (cases so far, shrinks so far).</summary>
public sealed record CheckOptions
{
    public int MaxTest { get; init; } = 100;
    /// <summary>FsCheck's (seed, gamma) to replay a run exactly; the gamma is odd.</summary>
    public (ulong Seed, ulong Gamma)? Replay { get; init; }
    public Action<int, int>? Progress { get; init; }
}

/// <summary>What one property run found.</summary>
public sealed record CheckReport(string Property, Setting Setting, bool Passed, int Tests, int Shrinks, Case? Shrunk, string? Failure,
    (ulong Seed, ulong Gamma)? Seed, TimeSpan Elapsed, TimeSpan ToFailure, TimeSpan ShrinkTime)
{
    /// <summary>The shrunk program's length: the instructions its pieces emitted (the fixed prologue, save area and handlers not counted).</summary>
    public int ShrunkInstructions => Shrunk?.Program.Image.PieceInstructions ?? 0;

    /// <summary>The argument that reproduces this run.</summary>
    public string? ReplayArgument => Seed is { } s ? $"({s.Seed},{s.Gamma})" : null;
}

/// <summary>Runs a <see cref="PropertyDef"/> under FsCheck: generation from a seed, shrinking to the smallest failing case.</summary>
public static class PropertyRunner
{
    public static Arbitrary<Case> Cases(PropertyDef def) =>
        Arb.From(
            Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed =>
            {
                var r = new Rng((ulong)seed * 0x9E37_79B9_7F4A_7C15UL + (ulong)size);
                var program = ProgramGen.Random(r, def.Generation, Math.Max(size, 5));
                return new Case(program, def.Knob?.Invoke(r) ?? 0);
            })),
            c => ProgramGen.Shrink(c.Program).Select(p => c with { Program = p })
                .Concat((def.ShrinkKnob?.Invoke(c.Knob) ?? []).Select(k => c with { Knob = k })));

    /// <summary>The check as a boolean with the failure kept: a thrown exception is a failure too (with its type).</summary>
    private static string? Safe(PropertyDef def, Case c, Setting s)
    {
        try { return def.Check(c, s); }
        catch (Exception e) { return $"the check threw {e.GetType().Name}: {e.Message}\n{e.StackTrace}"; }
    }

    public static CheckReport Run(PropertyDef def, Setting setting, CheckOptions options)
    {
        int tests = 0, shrinks = 0;
        var clock = Stopwatch.StartNew();
        TimeSpan? firstFailure = null;
        bool shrinking = false;
        var property = Prop.ForAll(Cases(def), (Case c) =>
        {
            if (!shrinking) tests++;
            bool ok = Safe(def, c, setting) is null;
            if (!ok && !shrinking) { firstFailure ??= clock.Elapsed; shrinking = true; }
            else if (shrinking) options.Progress?.Invoke(tests, ++shrinks);
            if (!shrinking) options.Progress?.Invoke(tests, 0);
            return ok;
        });
        var runner = new Capture();
        var config = Config.Quick.WithMaxTest(options.MaxTest).WithRunner(runner).WithQuietOnSuccess(true);
        if (options.Replay is { } rp)
            config = config.WithReplay(FSharpOption<Replay>.Some(new Replay(new Rnd(rp.Seed, rp.Gamma), FSharpOption<int>.None)));
        Check.One(config, property);
        clock.Stop();
        var name = def.Name;
        if (runner.Result is TestResult.Failed f)
        {
            var shrunk = f.Item3.Head as Case ?? f.Item2.Head as Case;
            string failure = shrunk is null ? "a case failed" : Safe(def, shrunk, setting) ?? "the shrunk case passed when re-run (a nondeterministic check)";
            var seed = f.Item5;
            return new CheckReport(name, setting, Passed: false, f.Item1.NumberOfTests, f.Item1.NumberOfShrinks, shrunk, failure,
                (seed.Seed, seed.Gamma), clock.Elapsed, firstFailure ?? clock.Elapsed, clock.Elapsed - (firstFailure ?? clock.Elapsed));
        }
        int n = runner.Result is TestResult.Passed p ? p.Item1.NumberOfTests : tests;
        return new CheckReport(name, setting, Passed: true, n, 0, null, null, null, clock.Elapsed, TimeSpan.Zero, TimeSpan.Zero);
    }

    private sealed class Capture : IRunner
    {
        public TestResult? Result;
        public void OnStartFixture(Type t) { }
        public void OnArguments(int ntest, FSharpList<object> args, FSharpFunc<int, FSharpFunc<FSharpList<object>, string>> every) { }
        public void OnShrink(FSharpList<object> args, FSharpFunc<FSharpList<object>, string> everyShrink) { }
        public void OnFinished(string name, TestResult result) => Result = result;
    }

    /// <summary>Parses "(seed,gamma)" (FsCheck's replay notation); the gamma must be odd.</summary>
    public static (ulong Seed, ulong Gamma) ParseReplay(string text)
    {
        var t = text.Trim();
        if (!(t.StartsWith('(') && t.EndsWith(')')))
            throw new FormatException($"--replay \"{text}\": expected (seed,gamma), e.g. \"(12345,678901)\"");
        var parts = t[1..^1].Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 2 || !ulong.TryParse(parts[0], out ulong seed) || !ulong.TryParse(parts[1], out ulong gamma))
            throw new FormatException($"--replay \"{text}\": expected two unsigned integers, (seed,gamma)");
        if (gamma % 2 == 0) throw new FormatException($"--replay \"{text}\": the gamma ({gamma}) must be odd");
        return (seed, gamma);
    }
}
