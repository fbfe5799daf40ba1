using Harness.Smp;
using Harness.Dbt.Clients;
using Harness.Dbt.Translate;
using Iced.Intel;
using RuleExamples;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Tests;

/// <summary>The rulebook's tables, the registries, and the worked example of docs/writing-rules.md.</summary>
public class RulesTests(ITestOutputHelper output)
{
    private static readonly Lazy<bool> registered = new(() =>
    {
        Registration.RegisterAll();
        return true;
    });

    private static string Region(string text, string begin, string end)
    {
        int a = text.IndexOf(begin, StringComparison.Ordinal), b = a < 0 ? -1 : text.IndexOf(end, a + begin.Length, StringComparison.Ordinal);
        Assert.True(a >= 0 && b > a, $"markers {begin} .. {end} not found");
        return text[(a + begin.Length)..b].ReplaceLineEndings("\n").Trim('\n');
    }

    [Fact]
    public void TheGuidesWorkedExampleIsTheCodeTheseTestsRun()
    {
        string source = File.ReadAllText(Path.Combine(Support.RepoRoot, "tests", "Dbt.Tests", "RulesExample.cs"));
        string guide = File.ReadAllText(Path.Combine(Support.RepoRoot, "docs", "writing-rules.md")).ReplaceLineEndings("\n");
        string example = Region(source, "// <worked-example>", "// </worked-example>");
        Assert.Contains("```csharp\n" + example + "\n```", guide);
    }

    /// <summary>
    /// The worked example built as its own assembly with the guide's project file, loaded with
    /// --rules and run on the guest kernel: the user's client's counter is printed by a CLI that
    /// has never heard of it.
    /// </summary>
    [Fact]
    public void TheWorkedExampleBuiltAsAnAssemblyRunsThroughTheCli()
    {
        string guide = File.ReadAllText(Path.Combine(Support.RepoRoot, "docs", "writing-rules.md")).ReplaceLineEndings("\n");
        string project = Region(guide[guide.IndexOf("<!-- rules-project -->", StringComparison.Ordinal)..], "```xml\n", "\n```");
        string source = Region(File.ReadAllText(Path.Combine(Support.RepoRoot, "tests", "Dbt.Tests", "RulesExample.cs")), "// <worked-example>", "// </worked-example>");
        string dir = Directory.CreateTempSubdirectory("harness-rules-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "RuleExamples.csproj"), project);
            File.WriteAllText(Path.Combine(dir, "RuleExamples.cs"), source);
            string outDir = Path.Combine(dir, "out");
            // The harness's own projects are already built (the CLI below uses them): do not rebuild them here.
            var build = global::Harness.Tests.Shared.HarnessCli.Exec("dotnet",
                ["build", Path.Combine(dir, "RuleExamples.csproj"), "-c", "Release", "-nologo", "-v", "q", $"-p:HarnessRoot={Support.RepoRoot}",
                 "-p:BuildProjectReferences=false", "-o", outDir], TimeSpan.FromMinutes(3));
            Assert.True(build.Code == 0, $"building the worked example failed:\n{build.Stdout}\n{build.Stderr}");
            string dll = Path.Combine(outDir, "RuleExamples.dll");
            Assert.False(File.Exists(Path.Combine(outDir, "Dbt.dll")), "the rules assembly must not carry its own copy of Dbt.dll");

            string[] args = ["run", "--dbt", "default", "--rules", dll, "--rule", "nop=elide-nop", "--client", "call-counter,prof",
                             "--workload", "null_syscall", "--vcpus", "1", "--exec", "deterministic"];
            var text = global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(2), args);
            Assert.True(text.Code == 0, $"exit {text.Code}: {text.Stderr}");
            Assert.Contains("client counters", text.Stderr);
            Assert.Contains("call-counter.calls", text.Stderr);

            var json = global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(2), [.. args, "--stats", "json"]);
            Assert.True(json.Code == 0, $"exit {json.Code}: {json.Stderr}");
            using var doc = System.Text.Json.JsonDocument.Parse(json.Stderr);
            var calls = doc.RootElement.GetProperty("clients").EnumerateArray().Single(c => c.GetProperty("client").GetString() == "call-counter");
            Assert.Equal("calls", calls.GetProperty("counter").GetString());
            long total = calls.GetProperty("value").GetInt64();
            Assert.True(total > 2000, $"null_syscall's 2000 syscalls each make calls in the kernel; counted {total}");
            var row = doc.RootElement.GetProperty("workloads").EnumerateArray().Single(w => w.GetProperty("name").GetString() == "null_syscall");
            long inRow = row.GetProperty("clients").GetProperty("call-counter.calls").GetInt64();
            Assert.InRange(inRow, 2000, total);

            // Bad inputs name what is wrong.
            var missing = global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(1), "run", "--dbt", "default", "--rules", Path.Combine(dir, "nope.dll"));
            Assert.Equal(2, missing.Code);
            Assert.Contains("assembly not found", missing.Stderr);
            var notAssembly = global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(1), "run", "--dbt", "default", "--rules", Path.Combine(dir, "RuleExamples.cs"));
            Assert.Equal(2, notAssembly.Code);
            Assert.Contains("not a .NET assembly", notAssembly.Stderr);
            var badRule = global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(1), "run", "--dbt", "default", "--rules", dll, "--rule", "nop=no-such-rule");
            Assert.Equal(2, badRule.Code);
            Assert.Contains("no rule named 'no-such-rule'", badRule.Stderr);
            Assert.Contains("elide-nop", badRule.Stderr);
            var badMnemonic = global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromMinutes(1), "run", "--dbt", "default", "--rule", "frobnicate=identity");
            Assert.Equal(2, badMnemonic.Code);
            Assert.Contains("'frobnicate' is not an x86 mnemonic", badMnemonic.Stderr);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private sealed class ThrowingRule : Rule
    {
        public override string Name => "throwing-nop";
        public override Flow Emit(Emitter e) => throw new InvalidOperationException("boom");
    }

    /// <summary>A rule's own bug stops the run as a host exception naming the rule and the instruction, with its stack: never swallowed.</summary>
    [Fact]
    public void ARuleThatThrowsIsReportedByName()
    {
        if (!RuleRegistry.IsRegistered("throwing-nop")) RuleRegistry.Register("throwing-nop", () => new ThrowingRule());
        var options = new DbtOptions { RuleOverrides = new Dictionary<Mnemonic, string> { [Mnemonic.Nop] = "throwing-nop" } };
        var run = Support.Run(CallsAndNops(3), translate: true, options);
        Assert.Equal(Harness.Smp.Cpu.StopReason.HostError, run.Result.Reason);
        var x = Assert.IsType<RuleFailedException>(run.Result.HostException);
        Assert.Contains("rule 'throwing-nop' threw InvalidOperationException translating 'nop'", x.Message);
        Assert.Contains("boom", x.Message);
        Assert.IsType<InvalidOperationException>(x.InnerException);
    }

    /// <summary>N rounds of: call f; nop; 3-byte nop; f: nop; add; ret (3 nops and 1 call per round).</summary>
    private static byte[] CallsAndNops(int rounds) => Support.Asm(a =>
    {
        var loop = a.CreateLabel(); var f = a.CreateLabel(); var done = a.CreateLabel();
        a.mov(ecx, rounds);
        a.xor(ebx, ebx);
        a.Label(ref loop);
        a.call(f);
        a.nop();
        a.db(0x0F, 0x1F, 0x00); // nop dword [rax]
        a.add(rbx, 2);
        a.dec(ecx);
        a.jnz(loop);
        a.mov(__qword_ptr[Support.Data], rbx);
        a.jmp(done);
        a.Label(ref f);
        a.nop();
        a.add(rbx, 1);
        a.ret();
        a.Label(ref done);
        Support.Exit(a);
    });

    [Fact]
    public void WorkedExampleCountsCallsAndElidesNops()
    {
        _ = registered.Value;
        const int rounds = 300;
        var code = CallsAndNops(rounds);
        var native = ProfSupport.Snippet(code, null);
        var counted = Run(code, new DbtOptions { Clients = ["call-counter"] });
        var elided = Run(code, new DbtOptions { Clients = ["call-counter"], RuleOverrides = Registration.Options().RuleOverrides });
        var both = Run(code, Registration.Options());
        output.WriteLine($"native {native.Result.TotalInstructions}, counting calls {counted.Executed}, and eliding nops {elided.Executed}; calls {elided.Calls}; prof {both.Prof}");

        Assert.True(native.Result.Exited);
        Assert.Equal((ulong)rounds * 3, BitConverter.ToUInt64(native.DataPage, 0));
        foreach (var r in new[] { counted, elided, both }) Assert.Equal(native.DataPage, r.DataPage);
        Assert.All(new[] { counted.Calls, elided.Calls, both.Calls }, c => Assert.Equal(rounds, c));
        // The only difference the rule makes: the nops no longer execute.
        Assert.Equal(3 * rounds, counted.Executed - elided.Executed);
        // prof still counts guest instructions, elided nops included: exactly what the native run executed.
        Assert.Equal(native.Result.TotalInstructions, both.Prof!.Value.Instructions);
    }

    private sealed record ExampleRun(byte[] DataPage, long Executed, long Calls, ProfCounts? Prof);

    private static ExampleRun Run(byte[] code, DbtOptions options)
    {
        using var m = new Machine(new MachineOptions
        {
            Vcpus = 1, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20,
            Control = new Smp.Control.Deterministic(quantum: 100), MaxInstructions = 50_000_000,
        });
        m.Memory.Write(Support.CodePhys, code);
        var dbt = KernelDbt.Attach(m, options);
        var r = m.Run(entry: Support.Code, setup: v => v.Gpr(4) = Support.StackTop);
        Assert.True(r.Exited, $"{r.Reason}: {r.Message}");
        return new ExampleRun(m.Memory.Span(Support.DataPhys, 4096).ToArray(), r.TotalInstructions,
            dbt.Client<CallCounter>()!.Calls.Read(), dbt.Client<Prof>()?.Read());
    }

    [Fact]
    public void RegistriesRefuseTakenAndMalformedNames()
    {
        _ = registered.Value;
        Assert.Throws<ArgumentException>(() => RuleRegistry.Register("identity", () => new ElideNopRule()));
        Assert.Throws<ArgumentException>(() => RuleRegistry.Register("elide-nop", () => new ElideNopRule()));
        Assert.Throws<ArgumentException>(() => RuleRegistry.Register("Bad Name", () => new ElideNopRule()));
        Assert.Throws<ArgumentException>(() => ClientRegistry.Register("prof", () => new CallCounter()));
        Assert.Throws<ArgumentException>(() => ClientRegistry.Register("", () => new CallCounter()));
        Assert.Contains("elide-nop", RuleRegistry.Names);
        Assert.Contains("call-counter", ClientRegistry.Names);
    }

    [Fact]
    public void UnknownNamesFailAtAttachNamingThem()
    {
        var code = Support.Asm(a => Support.Exit(a));
        var rule = Assert.Throws<ArgumentException>(() => Run(code, new DbtOptions { RuleOverrides = new Dictionary<Mnemonic, string> { [Mnemonic.Nop] = "no-such-rule" }, Clients = ["prof"] }));
        Assert.Contains("no-such-rule", rule.Message);
        var client = Assert.Throws<ArgumentException>(() => Run(code, new DbtOptions { Clients = ["no-such-client"] }));
        Assert.Contains("no-such-client", client.Message);
        Assert.Contains("prof", client.Message); // the registered ones are listed
    }

    [Fact]
    public void EveryBuiltInRuleIsRegisteredUnderItsOwnName()
    {
        foreach (var r in Rulebook.BuiltIn)
            Assert.Same(r, RuleRegistry.Create(r.Name));
    }

    /// <summary>One representative instruction per family, and the rule each configuration's table picks.</summary>
    public static TheoryData<string, string, string> Families() => new()
    {
        { "mov rax, rbx", "identity", "identity" },
        { "jmp near", "direct-jmp", "direct-jmp" },
        { "jne near", "direct-jcc", "direct-jcc" },
        { "loop", "counted-jcc", "counted-jcc" },
        { "call near", "direct-call", "no-callret-call" },
        { "jmp rax", "indirect-jmp", "indirect-jmp" },
        { "call qword [rax]", "indirect-call", "no-callret-indirect-call" },
        { "ret", "identity-end", "no-callret-ret" },
        { "retf", "lretq", "lretq" },
        { "iretq", "iretq", "iretq" },
        { "int3", "identity", "identity" },
        { "ud2", "identity-end", "identity-end" },
        { "wrmsr", "wrmsr", "wrmsr" },
        { "rdmsr", "rdmsr", "rdmsr" },
        { "lidt", "lidt", "lidt" },
        { "sidt", "sidt", "sidt" },
        { "syscall", "identity-end", "identity-end" },
        { "sysretq", "identity-end", "identity-end" },
        { "hlt", "identity", "identity" },
        { "jmp far [rax]", "unsupported", "unsupported" },
    };

    [Theory]
    [MemberData(nameof(Families))]
    public void TheTablesPickOneRulePerFamily(string what, string withCallRet, string noCallRet)
    {
        var ins = Decode(what);
        Assert.Equal(withCallRet, Rulebook.For(ins, DbtOptions.Default).Name);
        Assert.Equal(noCallRet, Rulebook.For(ins, DbtOptions.NoCallRet).Name);
    }

    [Fact]
    public void AnOverrideReplacesTheTablesRuleForItsMnemonicOnly()
    {
        _ = registered.Value;
        var options = Registration.Options();
        Assert.IsType<ElideNopRule>(Rulebook.For(Decode("nop"), options));
        Assert.Equal("identity", Rulebook.For(Decode("mov rax, rbx"), options).Name);
        Assert.Equal("identity", Rulebook.For(Decode("nop"), DbtOptions.Default).Name);
    }

    private static Instruction Decode(string what)
    {
        byte[] bytes = what switch
        {
            "mov rax, rbx" => [0x48, 0x89, 0xD8],
            "jmp near" => [0xE9, 0, 0, 0, 0],
            "jne near" => [0x0F, 0x85, 0, 0, 0, 0],
            "loop" => [0xE2, 0xFE],
            "call near" => [0xE8, 0, 0, 0, 0],
            "jmp rax" => [0xFF, 0xE0],
            "call qword [rax]" => [0xFF, 0x10],
            "ret" => [0xC3],
            "retf" => [0x48, 0xCB],
            "iretq" => [0x48, 0xCF],
            "int3" => [0xCC],
            "ud2" => [0x0F, 0x0B],
            "wrmsr" => [0x0F, 0x30],
            "rdmsr" => [0x0F, 0x32],
            "lidt" => [0x0F, 0x01, 0x18],
            "sidt" => [0x0F, 0x01, 0x08],
            "syscall" => [0x0F, 0x05],
            "sysretq" => [0x48, 0x0F, 0x07],
            "hlt" => [0xF4],
            "jmp far [rax]" => [0x48, 0xFF, 0x28],
            "nop" => [0x90],
            _ => throw new ArgumentException(what),
        };
        var d = Iced.Intel.Decoder.Create(64, bytes, Support.Code);
        d.Decode(out var ins);
        Assert.False(ins.IsInvalid, what);
        return ins;
    }
}
