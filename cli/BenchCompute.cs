using System.Globalization;
using Harness.Samples;
using Harness.Smp;
using Harness.Smp.Compile;
using Harness.Smp.Control;
using Spectre.Console;

namespace Harness.Cli;

/// <summary>
/// `harness bench compute`: the compute guest (guest/samples/compute) on the machine, interpreted
/// and compiled, against the same C compiled for the host (guest/build/host/libwork.so), with
/// exact guest instruction counts next to host times, all in one process: the speed goals of
/// docs/performance.md (issue 14) as ratios taken in one run.
/// </summary>
internal static unsafe class BenchCompute
{
    private const ulong Seed = ComputeParams.DefaultSeed;

    public sealed record Settings(ulong Iterations, int Repeat, bool Quick);

    private sealed record Row(string Name, long Instructions, TimeSpan Wall, string Note)
    {
        public double Mips => Instructions / Math.Max(Wall.TotalSeconds, 1e-9) / 1e6;
    }

    public static int Run(Settings s, CancellationToken ct)
    {
        string root, image, native;
        try
        {
            string kernel = DefaultImage.Ensure(ct, line => Console.Error.WriteLine($"harness: {line}"));
            root = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(kernel)!, "..", "..", ".."));
            image = ComputeParams.ImagePath(root);
            native = ComputeParams.NativeLibraryPath(root);
        }
        catch (DefaultImage.BuildException e) { Console.Error.WriteLine($"harness: {e.Message}"); return ExitCodes.BadInput; }
        catch (OperationCanceledException) { Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}"); return Signals.ExitCode; }
        if (!File.Exists(image)) { Console.Error.WriteLine($"harness: {image} was not built (guest/build.sh)"); return ExitCodes.BadInput; }

        var work = File.Exists(native) ? ComputeParams.LoadNative(native) : null;
        ulong n = s.Iterations;
        ulong[] want1 = work != null ? [work(n, Seed)] : [], want2 = work != null ? [work(2 * n, Seed)] : [];
        ulong[] wantPair = work != null ? [want1[0], work(n, Seed + 1)] : [];
        var errors = new List<string>();
        int step = 0, steps = 2 + 4 * s.Repeat + (work != null ? 1 : 0);
        void Say(string what) => Console.Error.WriteLine($"bench: [{++step}/{steps}] {what}");

        TimeSpan? nativeWall = null;
        if (work != null)
        {
            Say($"native work({n}) x{s.Repeat}");
            for (int i = 0; i < s.Repeat; i++)
            {
                var t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                work(n, Seed);
                var t = System.Diagnostics.Stopwatch.GetElapsedTime(t0);
                if (nativeWall is null || t < nativeWall) nativeWall = t;
            }
        }

        // The first compiled run of the process compiles (cold); later ones bind the cached code (warm).
        Say("compiled, 1 vCPU, first run of the process (compiles its regions)");
        var jit0 = BlockCompiler.JitTime + BlockCompiler.CompileTime;
        var cold = Measure(image, 1, n, BlockCompilation.Hot, want1, errors, ct);
        var compileTime = BlockCompiler.JitTime + BlockCompiler.CompileTime - jit0;
        Say("interpreted, 1 vCPU");
        var interpreted = Measure(image, 1, n, BlockCompilation.Off, want1, errors, ct);
        Row? warm = null, twice = null, pair = null;
        for (int r = 0; r < s.Repeat && !ct.IsCancellationRequested; r++)
        {
            // Alternating, so a change of host load hits every configuration alike; the fastest counts.
            Say($"compiled, 1 vCPU, work({n}) (repeat {r + 1})");
            warm = Fastest(warm, Measure(image, 1, n, BlockCompilation.Hot, want1, errors, ct));
            Say($"compiled, 1 vCPU, work({2 * n}) (repeat {r + 1})");
            twice = Fastest(twice, Measure(image, 1, 2 * n, BlockCompilation.Hot, want2, errors, ct));
            Say($"compiled, 2 vCPUs, work({n}) each (repeat {r + 1})");
            pair = Fastest(pair, Measure(image, 2, n, BlockCompilation.Hot, wantPair, errors, ct));
            Say($"interpreted, 1 vCPU (repeat {r + 1})");
            interpreted = Fastest(interpreted, Measure(image, 1, n, BlockCompilation.Off, want1, errors, ct));
        }
        if (ct.IsCancellationRequested) { Console.Error.WriteLine($"harness: interrupted by {Signals.Received ?? "cancellation"}"); return Signals.ExitCode; }

        var rows = new List<Row>
        {
            interpreted with { Name = "interpreted, 1 vCPU", Note = "fastest of " + (s.Repeat + 1) },
            cold with { Name = "compiled, 1 vCPU, first run", Note = $"compiles its regions: {compileTime.TotalMilliseconds:F0} ms of IL and JIT on the compiler thread" },
            warm! with { Name = "compiled, 1 vCPU", Note = "code from the process's code cache; fastest of " + s.Repeat },
            twice! with { Name = $"compiled, 1 vCPU, work({2 * n})", Note = "fastest of " + s.Repeat },
            pair! with { Name = "compiled, 2 vCPUs", Note = "work(N) on each vCPU, independent data; fastest of " + s.Repeat },
        };
        double steadyMs = (twice.Wall - warm.Wall).TotalMilliseconds;
        double steady = steadyMs > 0 ? (twice.Instructions - warm.Instructions) / (steadyMs / 1e3) / 1e6 : double.NaN;
        double scaling = pair.Mips / warm.Mips;
        Print(s, rows, nativeWall, steady, scaling, cold, interpreted);
        foreach (var e in errors) Console.Error.WriteLine($"harness: {e}");
        return errors.Count == 0 ? 0 : 1;
    }

    private static Row Fastest(Row? a, Row b) => a is null || b.Wall < a.Wall ? b : a;

    private static Row Measure(string image, int vcpus, ulong iterations, BlockCompilation compile, ulong[] want, List<string> errors, CancellationToken ct)
    {
        using var m = new Machine(new MachineOptions { Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = new FreeRunning(), Compile = compile });
        m.LoadElf(image);
        ComputeParams.Patch(m, iterations, Seed);
        var r = m.Run(ct);
        string what = $"{(compile == BlockCompilation.Off ? "interpreted" : "compiled")} run on {vcpus} vCPU(s)";
        if (!r.Exited || r.ExitStatus != 0) errors.Add($"{what}: {r.Reason}: {r.Message}");
        for (int i = 0; i < want.Length; i++)
        {
            ulong got = ComputeParams.Checksum(m, i);
            if (got != want[i]) errors.Add($"{what}: vCPU {i} checksum 0x{got:x16}, native 0x{want[i]:x16}");
        }
        return new Row("", r.TotalInstructions, r.Wall, "");
    }

    private static void Print(Settings s, List<Row> rows, TimeSpan? native, double steady, double scaling, Row cold, Row interpreted)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected) console.Profile.Width = 160;
        console.MarkupLine($"[bold]harness bench compute[/]{(s.Quick ? " [yellow](QUICK: a smoke run, not a measurement)[/]" : "")}: work(N), N = {s.Iterations}, " +
                           $"free-running; wall = machine run time (start-up of the process not included: benchmarks/startup.sh)");
        var t = new Table().Title("guest instructions (exact) and host time").AddColumn("run")
            .AddColumn(new TableColumn("guest insns").RightAligned()).AddColumn(new TableColumn("wall").RightAligned())
            .AddColumn(new TableColumn("MIPS").RightAligned()).AddColumn(new TableColumn("x native").RightAligned()).AddColumn("note");
        foreach (var r in rows)
        {
            double perVcpuWork = r.Name.StartsWith("compiled, 1 vCPU, work(") ? 2 : 1;
            string ratio = native is { } nt ? (r.Wall.TotalSeconds / (perVcpuWork * nt.TotalSeconds)).ToString("F1", CultureInfo.InvariantCulture) : "-";
            t.AddRow(r.Name, r.Instructions.ToString("N0", CultureInfo.InvariantCulture), $"{r.Wall.TotalMilliseconds:F1} ms", r.Mips.ToString("F1", CultureInfo.InvariantCulture), ratio, Markup.Escape(r.Note));
        }
        if (native is { } n) t.AddRow("native work(N) (libwork.so)", "-", $"{n.TotalMilliseconds:F2} ms", "-", "1.0", "the same C compiled for the host (gcc -O2)");
        console.Write(t);
        console.WriteLine();
        var goals = new Table().Title("goals (reported, not asserted; docs/performance.md)").AddColumn("goal").AddColumn("target").AddColumn("measured").AddColumn("met");
        void Goal(string name, string target, string measured, bool met) => goals.AddRow(name, target, measured, met ? "[green]yes[/]" : "[red]NO[/]");
        Goal("whole run, compiled, 1 vCPU (first run: compiling included)", ">= 300 MIPS", $"{cold.Mips:F1} MIPS ({cold.Instructions:N0} insns)", cold.Mips >= 300);
        Goal("steady state, compiled", ">= 500 MIPS", double.IsNaN(steady) ? "-" : $"{steady:F1} MIPS (work(2N) - work(N))", steady >= 500);
        Goal("2 vCPUs vs 1, compiled, independent work", ">= 1.9x", $"{scaling:F2}x", scaling >= 1.9);
        Goal("compiled vs interpreted, 1 vCPU", "(faster)", $"{rows[2].Mips / interpreted.Mips:F2}x", rows[2].Mips > interpreted.Mips);
        console.Write(goals);
    }
}
