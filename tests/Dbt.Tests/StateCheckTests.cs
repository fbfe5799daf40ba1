using Harness.Dbt.Verify;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Tests;

/// <summary>
/// The state check (Dbt/Verify/StateCheck.cs, docs/state-check.md): at every dispatcher entry the
/// translated state equals a lockstep native reference's at the same native boundary. The correct
/// translator passes on SnippetTests' programs and compute.elf in both configurations; a planted
/// rule bug that results comparisons cannot see fails it with a readable diff.
/// </summary>
public class StateCheckTests(ITestOutputHelper output)
{
    public sealed record Checked(RunResult Result, StateCheck Check, byte[] DataPage);

    /// <summary>A ring-0 snippet translated under the state check (Support.Run's machine, twice).</summary>
    private static Checked RunSnippet(byte[] code, DbtOptions? options, byte[]? data = null)
    {
        Machine Make()
        {
            var m = new Machine(new MachineOptions
            {
                MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20, Control = new Deterministic(quantum: 100), MaxInstructions = 50_000_000,
            });
            m.Memory.Write(Support.CodePhys, code);
            if (data is not null) m.Memory.Write(Support.DataPhys, data);
            return m;
        }
        using var m = Make();
        using var reference = Make();
        var check = StateCheck.Attach(m, reference, options, new StackRange(Support.StackTop - 0x10000, Support.StackTop));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var r = check.Run(cts.Token, entry: Support.Code, setup: v => v.Gpr(4) = Support.StackTop);
        return new Checked(r, check, m.Memory.Span(Support.DataPhys, 4096).ToArray());
    }

    /// <summary>SnippetTests' programs that run natively (the hypercall ones need the DBT), with their data pages.</summary>
    public static TheoryData<string, string> SnippetCases()
    {
        var d = new TheoryData<string, string>();
        foreach (var name in Snippets.Keys)
            foreach (var config in new[] { "default", "no-callret" }) d.Add(name, config);
        return d;
    }

    private static readonly Dictionary<string, Func<(byte[] Code, byte[]? Data)>> Snippets = new()
    {
        ["loop"] = () => (SnippetTests.LoopProgram(1000), null),
        ["calls"] = () => (SnippetTests.CallsProgram(), null),
        ["indirect"] = () =>
        {
            ulong t2 = 0, f = 0;
            SnippetTests.BuildIndirect(ref t2, ref f, final: false);
            return (SnippetTests.BuildIndirect(ref t2, ref f, final: true), null);
        },
        ["rip-relative-data"] = () => SnippetTests.RipRelativeDataProgram(),
        ["rip-relative-store"] = () => (SnippetTests.RipRelativeStoreProgram(), null),
        ["counted-loops"] = () => (SnippetTests.CountedLoopsProgram(), null),
    };

    private static DbtOptions Config(string config) => config == "default" ? DbtOptions.Default : DbtOptions.NoCallRet;

    [Theory]
    [MemberData(nameof(SnippetCases))]
    public void SnippetsMatchNativeAtEveryDispatcherEntry(string program, string config)
    {
        var (code, data) = Snippets[program]();
        var r = RunSnippet(code, Config(config), data);
        var c = r.Check;
        output.WriteLine($"{program} {config}: {c.EntriesChecked} entries checked, {c.StackWordsChecked} stack words ({c.CacheAddressesMapped} cache return addresses mapped, {c.UndefinedWordsSkipped} natively undefined)");
        Assert.True(c.Failure is null, c.Failure);
        Assert.True(r.Result.Exited && r.Result.ExitStatus == 0, $"{r.Result.Reason}: {r.Result.Message}");
        Assert.True(c.EntriesChecked > 0);
    }

    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void ComputeMatchesNativeAtEveryDispatcherEntry(string config)
    {
        Machine Make(Stream console)
        {
            var m = new Machine(new MachineOptions { Control = new Deterministic(quantum: 100), Console = console, MaxInstructions = 2_000_000_000 });
            m.LoadElf(Support.ComputeElf);
            return m;
        }
        var elf = File.ReadAllBytes(Support.ComputeElf);
        var symbols = Kernel.KernelImage.FromElf(elf, "compute.elf");
        var stack = new StackRange(symbols.Symbol("bsp_stack") ?? throw new InvalidOperationException("compute.elf has no bsp_stack"),
            symbols.Symbol("bsp_stack_top") ?? throw new InvalidOperationException("compute.elf has no bsp_stack_top"));
        var console = new MemoryStream();
        using var m = Make(console);
        using var reference = Make(Stream.Null);
        var check = StateCheck.Attach(m, reference, Config(config), stack);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var r = check.Run(cts.Token);
        output.WriteLine($"compute {config}: {check.EntriesChecked} entries checked, {check.StackWordsChecked} stack words ({check.CacheAddressesMapped} cache return addresses mapped, {check.UndefinedWordsSkipped} natively undefined), {r.TotalInstructions:N0} translated instructions, {r.Wall.TotalSeconds:F1} s");
        Assert.True(check.Failure is null, check.Failure);
        Assert.True(r.Exited && r.ExitStatus == 0, $"{r.Reason}: {r.Message}");
        Assert.Contains("compute: checksum=0x", System.Text.Encoding.ASCII.GetString(console.ToArray()));
        Assert.True(check.EntriesChecked > 50);
    }

    /// <summary>push an argument; call f; f: ret 8 (the callee pops its argument).</summary>
    internal static byte[] RetImm16Program() => Support.Asm(a =>
    {
        var f = a.CreateLabel();
        a.mov(rbx, 7);
        a.push(rbx);
        a.call(f);
        a.mov(__qword_ptr[Support.Data], rsp);
        Support.Exit(a);
        a.Label(ref f);
        a.add(rbx, __qword_ptr[rsp + 8]);
        a.ret(8);
    });

    /// <summary>
    /// Found by the state check: under no-callret, a <c>ret imm16</c> whose target misses the
    /// jumptable enters the dispatcher with [flags, target], and the dispatcher drops only the
    /// target slot, so RSP stays imm16 bytes low ("rsp ... ffffffff80380000 ffffffff8037fff8 &lt;--
    /// differs" at the jumptable miss). The miss path (level-2 routine and dispatcher) does not know
    /// the ret's immediate; the no-callret ret rule now moves the return address over the released
    /// bytes first, so every path sees a plain ret.
    /// </summary>
    [Theory]
    [InlineData("no-callret")]
    public void RetImm16MatchesNativeAtEveryDispatcherEntry(string config)
    {
        var r = RunSnippet(RetImm16Program(), Config(config));
        Assert.True(r.Check.Failure is null, r.Check.Failure);
        Assert.Equal(Support.StackTop, BitConverter.ToUInt64(r.DataPage, 0));
    }

    [Fact]
    public void RetImm16UnderCallRetIdentityMatchesNative()
    {
        var r = RunSnippet(RetImm16Program(), DbtOptions.Default);
        Assert.True(r.Check.Failure is null, r.Check.Failure);
        Assert.Equal(Support.StackTop, BitConverter.ToUInt64(r.DataPage, 0));
    }

    /// <summary>
    /// The planted bug: every translated direct jmp flips CF. The loop program's results are still
    /// native (nothing reads CF after a jmp), so comparing outputs passes; the state check stops the
    /// run at the first entry through a jmp's edge with the flags row of the diff.
    /// </summary>
    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void APlantedFlagBugThatResultsCannotSeeIsCaught(string config)
    {
        var code = SnippetTests.LoopProgram(1000);
        var planted = Config(config) with { PlantedJmpFlipsCarry = true };
        var native = Support.Run(code, translate: false);
        var unchecked_ = Support.Run(code, translate: true, planted);
        Assert.True(unchecked_.Result.Exited && unchecked_.Result.ExitStatus == 0, unchecked_.Result.Message);
        Assert.Equal(native.DataPage, unchecked_.DataPage); // results comparisons miss it

        var r = RunSnippet(code, planted);
        string failure = r.Check.Failure ?? throw new Xunit.Sdk.XunitException("the state check missed the planted bug");
        output.WriteLine(failure);
        Assert.Equal(StopReason.HostError, r.Result.Reason);
        Assert.StartsWith("dbt state check: state differs from native at dispatcher entry", r.Result.Message);
        Assert.Matches(@"rflags +[0-9a-f]{16} +[0-9a-f]{16} +<-- differs: CF native [01], translated [01]", failure);
        Assert.DoesNotMatch(@"r(ax|bx|cx|ip|sp) .*<-- differs", failure); // only the flags
        Assert.Contains("cmc", failure); // the block listing shows the planted instruction
    }
}
