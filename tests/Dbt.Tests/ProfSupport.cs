using Harness.Tests.Shared;
using System.Text;
using Harness.Dbt.Clients;
using Harness.Smp;
using Harness.Smp.Control;

namespace Harness.Dbt.Tests;

/// <summary>Boots the guest kernel or compute.elf with clients attached (KernelSupport's runs, plus DbtOptions.Clients).</summary>
internal static class ProfSupport
{
    public static readonly string[] Prof = [Clients.Prof.ClientName];

    public static DbtOptions Options(string config, string[]? clients = null, bool plantedClobber = false) => new()
    {
        CallRet = config == "default",
        Clients = clients ?? Prof,
        PlantedCounterClobbersFlags = plantedClobber,
    };

    /// <summary>A run and prof's counts at its end (read before the machine's memory goes away), null without prof.</summary>
    public sealed record ProfRun(KernelSupport.KernelRun Run, ProfCounts? Prof);

    /// <summary>Boots the guest kernel under dbt (null: native) with its kernel symbols, like KernelSupport.Boot.</summary>
    public static ProfRun Boot(DbtOptions? dbt, int vcpus, ExecutionControl control, string? cmdline = null, long maxInstructions = 2_000_000_000)
    {
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = control, MaxInstructions = maxInstructions,
            Console = console, CommandLine = cmdline,
        });
        var elf = File.ReadAllBytes(KernelSupport.KernelPath);
        m.LoadElf(elf, "kernel.elf");
        KernelDbt? d = null;
        if (dbt is not null)
            d = KernelDbt.Attach(m, new DbtOptions
            {
                CallRet = dbt.CallRet, Kernel = Kernel.KernelImage.FromElf(elf, "kernel.elf"), Clients = dbt.Clients,
                RuleOverrides = dbt.RuleOverrides, PlantedCounterClobbersFlags = dbt.PlantedCounterClobbersFlags,
            });
        long outside = 0;
        ulong first = 0;
        ulong rb = m.ReservedBase, rs = m.ReservedSize;
        if (d is not null)
            m.OnBlockDecoded((_, va, pa) =>
            {
                if (pa - rb < rs || (long)va >= 0) return;
                if (Interlocked.Increment(ref outside) == 1) first = va;
            });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var r = m.Run(cts.Token);
        return new ProfRun(new KernelSupport.KernelRun(r, Encoding.ASCII.GetString(console.ToArray()), d, outside, first), d?.Client<Prof>()?.Read());
    }

    public sealed record ComputeRun(RunResult Result, string Console, KernelDbt? Dbt, ProfCounts? Prof);

    public static ComputeRun Compute(int vcpus, ExecutionControl control, DbtOptions? dbt)
    {
        var console = new MemoryStream();
        using var m = new Machine(new MachineOptions { Vcpus = vcpus, Control = control, Console = console, MaxInstructions = 2_000_000_000 });
        m.LoadElf(Support.ComputeElf);
        var d = dbt is null ? null : KernelDbt.Attach(m, dbt);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var r = m.Run(cts.Token);
        return new ComputeRun(r, Encoding.ASCII.GetString(console.ToArray()), d, d?.Client<Prof>()?.Read());
    }

    public sealed record SnippetRun(RunResult Result, byte[] DataPage, ProfCounts? Prof);

    /// <summary>Support.Run with prof's counts read before the machine is disposed.</summary>
    public static SnippetRun Snippet(byte[] code, DbtOptions? options, int vcpus = 1, byte[]? data = null)
    {
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20,
            Control = new Deterministic(quantum: 100), MaxInstructions = 50_000_000,
        });
        m.Memory.Write(Support.CodePhys, code);
        if (data is not null) m.Memory.Write(Support.DataPhys, data);
        var d = options is null ? null : KernelDbt.Attach(m, options);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var r = m.Run(cts.Token, entry: Support.Code, setup: v => v.Gpr(4) = Support.StackTop);
        return new SnippetRun(r, m.Memory.Span(Support.DataPhys, 4096).ToArray(), d?.Client<Prof>()?.Read());
    }
}
