using BenchmarkDotNet.Attributes;
using Microsoft.Coyote;
using Microsoft.Coyote.Runtime;
using Microsoft.Coyote.SystematicTesting;
using CoyoteThread = Microsoft.Coyote.Rewriting.Types.Threading.Thread;

namespace Harness.Benchmarks;

/// <summary>
/// Coyote's own cost per scheduling point, with no machine: two controlled threads that do nothing
/// but call <c>SchedulingPoint.Interleave()</c>, under the random strategy the explorations use
/// (settings as Verification's Explorer: telemetry off, no fuzzing fallback). The harness cannot
/// make a point cheaper than this floor; the kernel scenario's cost per point is compared with it in
/// docs/performance.md. Column: us per point = mean time / (2 x PointsPerThread).
/// </summary>
[Config(typeof(BenchConfig))]
public class SchedulingPointCost
{
    public const int PointsPerThread = 20_000;

    [Benchmark(Description = "Coyote floor: 2 threads x 20,000 Interleave()")]
    public int CoyoteFloor()
    {
        var config = Configuration.Create()
            .WithTelemetryEnabled(false)
            .WithSystematicFuzzingFallbackEnabled(false)
            .WithPartiallyControlledConcurrencyAllowed(false)
            .WithTestingIterations(1)
            .WithMaxSchedulingSteps(4 * PointsPerThread)
            .WithRandomStrategy();
        int done = 0;
        using var engine = TestingEngine.Create(config, () =>
        {
            var a = CoyoteThread.Create(Spin);
            var b = CoyoteThread.Create(Spin);
            CoyoteThread.Start(a);
            CoyoteThread.Start(b);
            CoyoteThread.Join(a);
            CoyoteThread.Join(b);
            done = 2;
        });
        engine.Run();
        if (engine.TestReport.NumOfFoundBugs > 0 || done != 2)
            throw new InvalidOperationException($"the floor run did not complete: {string.Join("; ", engine.TestReport.BugReports)}");
        return done;
    }

    private static void Spin()
    {
        for (int i = 0; i < PointsPerThread; i++) SchedulingPoint.Interleave();
    }
}
