using System.Globalization;
using System.Text;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Harness.Benchmarks;

// Interpreter and DBT benchmarks. Usage (benchmarks/run.sh wraps this):
//   dotnet run -c Release --project benchmarks -- [--quick] [--filter <glob>] [other BenchmarkDotNet options]
// --quick: a dry run (1 iteration, no warm-up) with N = 40 rounds, to smoke-test the suite in seconds.
// Without --filter every suite runs (InterpreterThroughput, TwoVcpuScaling, SeamsCost, KernelDbt, SchedulingPointCost).

var argList = args.ToList();
bool quick = argList.Remove("--quick");
BenchConfig.Quick = quick;
if (!argList.Any(a => a is "--filter" or "-f" or "--list" or "--info" or "-h" or "--help" or "--version"))
    argList.AddRange(["--filter", "*"]);

// Shared with the benchmark child processes through the environment.
Environment.SetEnvironmentVariable(ComputeGuest.RootVar, ComputeGuest.RepoRoot);
if (quick && Environment.GetEnvironmentVariable(ComputeGuest.IterationsVar) is null)
    Environment.SetEnvironmentVariable(ComputeGuest.IterationsVar, ComputeGuest.QuickIterations.ToString(CultureInfo.InvariantCulture));
string artifacts = Path.Combine(ComputeGuest.RepoRoot, "benchmarks", "BenchmarkDotNet.Artifacts");
string facts = Path.Combine(artifacts, "harness-facts");
if (Directory.Exists(facts)) Directory.Delete(facts, true);
Environment.SetEnvironmentVariable(ComputeGuest.OutVar, facts);

Console.WriteLine($"// harness benchmarks: N = {ComputeGuest.Iterations} rounds of work() per vCPU{(quick ? " (quick)" : "")}; {Environment.ProcessorCount} host cores");
var config = ManualConfig.CreateEmpty().WithArtifactsPath(artifacts);
var summaries = BenchmarkSwitcher.FromAssembly(typeof(ComputeGuest).Assembly).Run([.. argList], config).ToArray();

var report = Report(summaries, quick);
Console.WriteLine();
Console.WriteLine(report);
Directory.CreateDirectory(artifacts);
File.WriteAllText(Path.Combine(artifacts, "harness-summary.md"), report);
return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;

static string Report(IEnumerable<Summary> summaries, bool quick)
{
    var sb = new StringBuilder();
    sb.AppendLine($"## Harness benchmark summary{(quick ? " (QUICK: dry run, not a measurement)" : "")}");
    sb.AppendLine();
    sb.AppendLine($"N = {ComputeGuest.Iterations} rounds of work() per vCPU; host: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}");
    sb.AppendLine();
    foreach (var s in summaries)
    {
        foreach (var c in s.BenchmarksCases)
        {
            var st = s[c]?.ResultStatistics;
            if (st is null) { sb.AppendLine($"- {c.DisplayInfo}: no result"); continue; }
            var line = new StringBuilder($"- {c.Descriptor.Type.Name}.{c.Descriptor.WorkloadMethod.Name} [{c.Job.Id}{(c.HasParameters ? " " + c.Parameters.DisplayInfo : "")}]: mean {st.Mean / 1e6:F2} ms (± {st.StandardDeviation / 1e6:F2} ms, n={st.N})");
            if (GuestMipsColumn.Instructions(c) is { } insns)
                line.Append(CultureInfo.InvariantCulture, $"; {insns:N0} guest instructions; {insns / (st.Mean / 1e9) / 1e6:F1} guest MIPS");
            if (ScalingColumn.Scaling(s, c) is { } sc)
                line.Append(CultureInfo.InvariantCulture, $"; scaling {sc:F2}x");
            sb.AppendLine(line.ToString());
        }
        // emulated / native
        var native = s.BenchmarksCases.FirstOrDefault(c => c.Descriptor.WorkloadMethod.Name == nameof(InterpreterThroughput.Native));
        var emu = s.BenchmarksCases.FirstOrDefault(c => c.Descriptor.Type == typeof(InterpreterThroughput) && c.Descriptor.WorkloadMethod.Name == nameof(InterpreterThroughput.Emulated));
        if (native is not null && emu is not null && s[native]?.ResultStatistics is { } n && s[emu]?.ResultStatistics is { } e)
            sb.AppendLine(CultureInfo.InvariantCulture, $"- interpreted / native = {e.Mean / n.Mean:F1}x slower (native work(N) {n.Mean / 1e6:F3} ms)");
        var once = s.BenchmarksCases.FirstOrDefault(c => c.Descriptor.Type == typeof(InterpreterThroughput) && c.Descriptor.WorkloadMethod.Name == nameof(InterpreterThroughput.Compiled));
        var twice = s.BenchmarksCases.FirstOrDefault(c => c.Descriptor.Type == typeof(InterpreterThroughput) && c.Descriptor.WorkloadMethod.Name == nameof(InterpreterThroughput.CompiledDouble));
        if (native is not null && once is not null && twice is not null && s[native]?.ResultStatistics is { } nt
            && s[once]?.ResultStatistics is { } c1 && s[twice]?.ResultStatistics is { } c2
            && GuestMipsColumn.Instructions(once) is { } i1 && GuestMipsColumn.Instructions(twice) is { } i2)
        {
            double steadyMs = (c2.Mean - c1.Mean) / 1e6;
            sb.AppendLine(CultureInfo.InvariantCulture, $"- compiled / native = {c1.Mean / nt.Mean:F1}x slower (whole run of work(N), compiler warm-up included)");
            if (steadyMs <= 0)
                sb.AppendLine(CultureInfo.InvariantCulture, $"- compiled steady state: not measurable in this run (time(2N) {c2.Mean / 1e6:F1} ms <= time(N) {c1.Mean / 1e6:F1} ms)");
            else
                sb.AppendLine(CultureInfo.InvariantCulture, $"- compiled steady state = {(i2 - i1) / (steadyMs / 1e3) / 1e6:F1} guest MIPS ((instructions(2N) - instructions(N)) / (time(2N) - time(N)) = {i2 - i1:N0} / {steadyMs:F1} ms); {steadyMs / (nt.Mean / 1e6):F1}x native work(N) (goal: >= 500 MIPS)");
        }
        var kernelNative = s.BenchmarksCases.FirstOrDefault(c => c.Descriptor.Type == typeof(KernelDbt) && c.Descriptor.WorkloadMethod.Name == nameof(KernelDbt.Native));
        if (kernelNative is not null && s[kernelNative]?.ResultStatistics is { } kn)
            foreach (var c in s.BenchmarksCases.Where(c => c.Descriptor.Type == typeof(KernelDbt) && c != kernelNative))
                if (s[c]?.ResultStatistics is { } kt)
                    sb.AppendLine(CultureInfo.InvariantCulture, $"- kernel workloads, {c.Descriptor.WorkloadMethod.Name} / native host time = {kt.Mean / kn.Mean:F2}x (goal for default: <= 1.3x; guest instructions {GuestMipsColumn.Instructions(c):N0} vs {GuestMipsColumn.Instructions(kernelNative):N0})");
        var floor = s.BenchmarksCases.FirstOrDefault(c => c.Descriptor.Type == typeof(SchedulingPointCost));
        if (floor is not null && s[floor]?.ResultStatistics is { } f)
            sb.AppendLine(CultureInfo.InvariantCulture, $"- Coyote's floor: {f.Mean / 1e3 / (2.0 * SchedulingPointCost.PointsPerThread):F2} us per scheduling point (2 threads x {SchedulingPointCost.PointsPerThread:N0} Interleave(), engine set-up included)");
        var seams = s.BenchmarksCases.Where(c => c.Descriptor.Type == typeof(SeamsCost)).ToArray();
        var with = seams.FirstOrDefault(c => c.Job.Id == SeamsCost.SeamsJob);
        var without = seams.FirstOrDefault(c => c.Job.Id == SeamsCost.NoSeamsJob);
        if (with is not null && without is not null && s[with]?.ResultStatistics is { } w && s[without]?.ResultStatistics is { } wo)
            sb.AppendLine(CultureInfo.InvariantCulture, $"- seams overhead = {(w.Mean / wo.Mean - 1) * 100:+0.0;-0.0}% (Seams {w.Mean / 1e6:F1} ms vs NoSeams {wo.Mean / 1e6:F1} ms); compiled: Seams job {(ComputeGuest.Recorded("seams-points-readonly") is not null ? "readonly" : "?")}, NoSeams job {(ComputeGuest.Recorded("seams-points-const") is not null ? "const" : "NOT const")}");
    }
    return sb.ToString();
}
