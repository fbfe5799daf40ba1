using Harness.Properties.Generators;
using Harness.Properties.Run;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Properties.Tests;

public class ProbeTests(ITestOutputHelper output)
{
    [Fact]
    public void Probe()
    {
        int bad = 0;
        for (int seed = 1; seed <= 300; seed++)
        {
            var p = ProgramGen.Random(new Rng((ulong)seed), new GenOptions { MaxVcpus = 4 });
            var n = ProgramRunner.Run(p, new RunSpec());
            var spec = new RunSpec { Configuration = seed % 2 == 0 ? "default" : "no-callret", Prof = seed % 3 == 0 };
            var t = ProgramRunner.Run(p, spec);
            var d = StateDiff.Compare(p, n, "native", t, spec.ToString());
            if (n.Result.Reason != Harness.Machine.Cpu.StopReason.Exited || n.Result.ExitStatus != 0 || d is not null)
            {
                string l = p.ToString();
                int a = l.IndexOf("; worker"), e = l.IndexOf("; #PF");
                if (bad++ < 8) output.WriteLine($"seed {seed} ({spec}): native {n.Result.Reason} {n.Result.ExitStatus} {n.Result.Message}; translated {t.Result.Reason} {t.Result.Message}\n{d}\n{l[..l.IndexOf('\n', l.IndexOf('\n') + 1)]}\n{l[a..e]}");
            }
        }
        output.WriteLine($"{bad} bad of 300");
        Assert.Equal(0, bad);
    }
}
