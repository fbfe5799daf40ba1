using Harness.Properties.Generators;
using Harness.Properties.Run;
using Harness.Machine;
using Harness.Machine.Control;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Properties.Tests;

public unsafe class ScratchTests(ITestOutputHelper output)
{
    [Fact]
    public void Scratch()
    {
        var def = Catalog.Property("flush-equals-fresh");
        var setting = new Setting("default", true);
        var r = PropertyRunner.Run(def, setting, new CheckOptions { Replay = ReplaySeed.Parse("(16520320170610758093,9680946111178795465,17)") });
        var p = r.Shrunk!.Program;
        output.WriteLine(r.Failure);
        using var m = new Harness.Machine.Machine(new MachineOptions { Vcpus = p.Vcpus, MemoryBytes = 64UL << 20, ReservedBytes = 8UL << 20, Control = new Deterministic(97), MaxInstructions = 2_000_000 });
        p.Image.Load(m);
        var dbt = Harness.Dbt.Dbt.Attach(m, Harness.Dbt.DbtOptions.Default with { Kernel = p.Image.Kernel, Clients = ["prof"] });
        var events = new Queue<long>(new long[] { 47, 147, 204 });
        m.HostEventAt = 47;
        m.HostEvent = v =>
        {
            foreach (var u in m.Vcpus) output.WriteLine($"  at {v.Retired}: vcpu{u.Index} rip {u.Rip:x} retired {u.Retired} halted {u.IsHalted} safe {m.SafePoint!(u)}\n{(dbt.Cache.Contains(u.Rip) ? dbt.Describe(u.Rip) : "native")}");
            bool ok = dbt.TrySwitchAtHost(v, off: true, wipe: true, on: true);
            output.WriteLine($"flush at {v.Retired}: {ok}");
            foreach (var u in m.Vcpus) output.WriteLine($"  after: vcpu{u.Index} rip {u.Rip:x} safe {m.SafePoint!(u)}");
            if (ok) events.Dequeue();
            m.HostEventAt = ok ? (events.TryPeek(out var n) ? Math.Max(n, v.Retired + 1) : long.MaxValue) : v.Retired + 1;
        };
        var res = m.Run(entry: p.Image.Entry);
        output.WriteLine($"{res.Reason} {res.Message}");
        output.WriteLine(p.ToString());
    }
}
