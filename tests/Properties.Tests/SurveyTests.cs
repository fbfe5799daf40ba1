using Xunit;
using Xunit.Abstractions;

namespace Harness.Properties.Tests;

public class SurveyTests(ITestOutputHelper output)
{
    [Fact]
    public void Survey()
    {
        foreach (var bug in Catalog.Planted)
        {
            var def = Catalog.Property(bug.Property);
            var setting = new Setting("default", bug.Prof, bug.Apply(Harness.Dbt.DbtOptions.Default));
            for (ulong seed = 1; seed <= 3; seed++)
            {
                var r = PropertyRunner.Run(def, setting, new CheckOptions { MaxTest = 300, Replay = (seed * 1000003, 2 * seed + 1) });
                output.WriteLine($"{bug.Name} seed {seed}: passed={r.Passed} tests={r.Tests} shrinks={r.Shrinks} shrunk={r.ShrunkInstructions} insns, {r.Elapsed.TotalSeconds:F1} s");
                if (seed == 1 && !r.Passed) output.WriteLine(r.Failure + "\n" + r.Shrunk);
            }
        }
        foreach (var def in Catalog.Properties)
        {
            var r = PropertyRunner.Run(def, new Setting(), new CheckOptions { MaxTest = 100 });
            output.WriteLine($"{def.Name} correct translator: passed={r.Passed} tests={r.Tests} {r.Elapsed.TotalSeconds:F1} s");
            if (!r.Passed) output.WriteLine(r.Failure + "\n" + r.Shrunk);
        }
    }
}
