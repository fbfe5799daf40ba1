using Harness.Tests.Shared;
using System.Text.Json;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>The `harness run` command line: exit codes, messages, and the stdout/stderr split.</summary>
[Collection(SampleGuestCollection.Name)]
public class CliTests(SampleGuestFixture guest, CliTests.Fixture cli) : IClassFixture<CliTests.Fixture>
{
    public sealed class Fixture : IDisposable
    {
        public readonly CliFixture Cli = new();
        public readonly string Dir = Directory.CreateTempSubdirectory("harness-cli-tests-").FullName;

        public string Write(string name, byte[] bytes)
        {
            string path = Path.Combine(Dir, name);
            File.WriteAllBytes(path, bytes);
            return path;
        }

        public void Dispose()
        {
            try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
        }
    }

    (int Code, string Stdout, string Stderr) Run(params string[] args) => cli.Cli.Run(args);

    [Fact]
    public void HelpListsTheOptions()
    {
        var (code, stdout, _) = Run("run", "--help");
        Assert.Equal(0, code);
        foreach (var o in new[] { "--vcpus", "--max-instructions", "--memory", "--stats", "--exec", "--quantum", "<image>" })
            Assert.Contains(o, stdout);
    }

    [Fact]
    public void RootHelpListsRun()
    {
        var (code, stdout, _) = Run("--help");
        Assert.Equal(0, code);
        Assert.Contains("run", stdout);
    }

    [Theory]
    [InlineData("--vcpus", "0")]
    [InlineData("--vcpus", "65")]
    [InlineData("--vcpus", "abc")]
    [InlineData("--max-instructions", "-1")]
    [InlineData("--quantum", "0")]
    [InlineData("--memory", "8")]
    [InlineData("--memory", "lots")]
    [InlineData("--exec", "turbo")]
    [InlineData("--stats", "xml")]
    public void BadOptionValueExits2NamingTheOption(string option, string value)
    {
        var (code, stdout, stderr) = Run("run", option, value, guest.ImagePath);
        Assert.True(code == 2, $"exit {code}; stderr: {stderr}");
        Assert.Contains(option, stderr);
        Assert.DoesNotContain("smp-demo", stdout);
    }

    [Fact]
    public void UnknownOptionExits2()
    {
        var (code, _, stderr) = Run("run", guest.ImagePath, "--frobnicate");
        Assert.True(code == 2, $"exit {code}; stderr: {stderr}");
        Assert.Contains("--frobnicate", stderr);
    }

    [Fact]
    public void MissingImageExits2NamingThePath()
    {
        string path = Path.Combine(cli.Dir, "does-not-exist.elf");
        var (code, _, stderr) = Run("run", path);
        Assert.Equal(2, code);
        Assert.Contains(path, stderr);
    }

    [Fact]
    public void CorruptImageExits2NamingThePathAndProblem()
    {
        string path = cli.Write("corrupt.elf", [0x7F, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0, 0, 0]);
        var (code, stdout, stderr) = Run("run", path);
        Assert.Equal(2, code);
        Assert.Contains(path, stderr);
        Assert.Contains("10 bytes", stderr);
        Assert.Equal("", stdout);
    }

    [Fact]
    public void WrongMachineImageExits2()
    {
        var b = ElfBuilder.For([0xEB, 0xFE]);
        b.MachineId = 40; // ARM
        string path = cli.Write("arm.elf", b.Build());
        var (code, _, stderr) = Run("run", path);
        Assert.Equal(2, code);
        Assert.Contains("e_machine", stderr);
    }

    [Theory]
    [InlineData("free")]
    [InlineData("deterministic")]
    public void InstructionLimitExits124(string exec)
    {
        string path = cli.Write($"spin-{exec}.elf", ElfBuilder.For([0xEB, 0xFE]).Build());
        var (code, stdout, stderr) = Run("run", path, "--max-instructions", "100000", "--exec", exec);
        Assert.True(code == 124, $"exit {code}; stderr: {stderr}");
        Assert.Contains("InstructionLimit", stderr);
        Assert.Contains("instruction limit", stderr);
        Assert.Equal("", stdout);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(3, 3)]
    [InlineData(256, 1)]   // non-zero never maps to 0
    [InlineData(0x1FF, 0xFF)]
    public void GuestStatusBecomesTheExitCode(int status, int expected)
    {
        var code = Support.Asm(a => { a.mov(eax, status); a.@out(0xF4, eax); a.hlt(); });
        string path = cli.Write($"exit-{status}.elf", ElfBuilder.For(code).Build());
        var (exit, _, stderr) = Run("run", path, "--vcpus", "1");
        Assert.True(exit == expected, $"exit {exit}; stderr: {stderr}");
    }

    [Fact]
    public void MachineFaultExits125()
    {
        string path = cli.Write("ud2.elf", ElfBuilder.For([0x0F, 0x0B]).Build());
        var (code, _, stderr) = Run("run", path, "--vcpus", "1");
        Assert.Equal(125, code);
        Assert.Contains("TripleFault", stderr);
        Assert.Contains("0f 0b", stderr);
    }

    [Fact]
    public void DeadlockExits126()
    {
        string path = cli.Write("cli-hlt.elf", ElfBuilder.For([0xFA, 0xF4]).Build());
        var (code, _, stderr) = Run("run", path, "--vcpus", "1");
        Assert.Equal(126, code);
        Assert.Contains("Deadlock", stderr);
    }

    [Fact]
    public void WorkloadsBecomeTheKernelCommandLine()
    {
        string path = cli.Write("echo-cmdline.elf", ElfBuilder.For(CommandLineTests.EchoGuest()).Build());
        var (exit, stdout, stderr) = Run("run", "--kernel", path, "--vcpus", "1", "--cmdline", "quiet", "--workload", "selftest", "--workload", "null_syscall,pipe_rtt");
        Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}");
        Assert.Equal("quiet run=selftest,null_syscall,pipe_rtt", stdout);
        var both = Run("run", path, "--kernel", path);
        Assert.Equal(2, both.Code);
        Assert.Contains("not both", both.Stderr);
    }

    [Fact]
    public void ResultLinesAreSummarizedOnStderr()
    {
        const string lines = "result alpha iterations=100 insns_per_op=57\nnoise line\nresult beta iterations=7 checksum=0xabc\n"
            + "result alpha_perf insns=4242\nworkload alpha exit=0 time=1234567\n";
        var code = Support.Asm(a =>
        {
            foreach (byte b in System.Text.Encoding.ASCII.GetBytes(lines)) { a.mov(Iced.Intel.AssemblerRegisters.al, b); a.@out(0xE9, Iced.Intel.AssemblerRegisters.al); }
            a.xor(Iced.Intel.AssemblerRegisters.eax, Iced.Intel.AssemblerRegisters.eax);
            a.@out(0xF4, Iced.Intel.AssemblerRegisters.eax);
        });
        string path = cli.Write("results.elf", ElfBuilder.For(code).Build());
        var (exit, stdout, stderr) = Run("run", path, "--vcpus", "1");
        Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}");
        Assert.Equal(lines, stdout.ReplaceLineEndings("\n"));
        foreach (var cell in new[] { "workload", "guest time", "iterations", "insns_per_op", "checksum", "alpha", "beta", "57", "0xabc", "1,234,567", "perf: insns=4242" })
            Assert.Contains(cell, stderr);
        Assert.DoesNotContain("noise", stderr);
    }

    [Theory]
    [InlineData("free")]
    [InlineData("deterministic")]
    public void StatsJsonGoesToStderrAndStdoutIsOnlyTheConsole(string exec)
    {
        var (code, stdout, stderr) = Run("run", guest.ImagePath, "--vcpus", "2", "--stats", "json", "--exec", exec, "--quantum", "500");
        Assert.True(code == 0, $"exit {code}; stderr: {stderr}");
        Assert.Equal(SampleGuestFixture.Expected(2), stdout.ReplaceLineEndings("\n"));
        using var doc = JsonDocument.Parse(stderr);
        var rootEl = doc.RootElement;
        Assert.Equal("Exited", rootEl.GetProperty("reason").GetString());
        Assert.Equal(0, rootEl.GetProperty("exitStatus").GetInt32());
        var vcpus = rootEl.GetProperty("vcpus").EnumerateArray().ToList();
        Assert.Equal(2, vcpus.Count);
        long total = 0;
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(i, vcpus[i].GetProperty("index").GetInt32());
            Assert.True(vcpus[i].GetProperty("started").GetBoolean());
            long n = vcpus[i].GetProperty("instructions").GetInt64();
            Assert.True(n > 0, $"vCPU {i} retired no instructions");
            total += n;
        }
        Assert.Equal(total, rootEl.GetProperty("totalInstructions").GetInt64());
    }

    [Fact]
    public void DeterministicStatsAreReproducible()
    {
        string[] args = ["run", guest.ImagePath, "--vcpus", "4", "--stats", "json", "--exec", "deterministic", "--quantum", "7"];
        var a = Run(args);
        var b = Run(args);
        Assert.Equal(0, a.Code);
        Assert.Equal(a.Stdout, b.Stdout);
        static long[] Counts(string json)
        {
            using var d = JsonDocument.Parse(json);
            return d.RootElement.GetProperty("vcpus").EnumerateArray().Select(v => v.GetProperty("instructions").GetInt64()).ToArray();
        }
        Assert.Equal(Counts(a.Stderr), Counts(b.Stderr));
    }

    [Theory]
    [InlineData("text")]
    [InlineData(null)] // "--stats" alone means text (the form docs and issues write)
    public void StatsTextGoesToStderr(string? value)
    {
        string[] args = ["run", guest.ImagePath, "--vcpus", "1", "--stats", .. (value is null ? Array.Empty<string>() : [value])];
        var (code, stdout, stderr) = Run(args);
        Assert.Equal(0, code);
        Assert.Equal(SampleGuestFixture.Expected(1), stdout.ReplaceLineEndings("\n"));
        Assert.Contains("instructions", stderr);
    }

    /// <summary>Under --stats json, stderr is exactly one JSON document for every way a run ends, the stop reason inside it.</summary>
    [Theory]
    [InlineData("exit", "Exited", 3)]
    [InlineData("limit", "InstructionLimit", 124)]
    [InlineData("ud2", "TripleFault", 125)]
    [InlineData("avx", "Unsupported", 125)]
    [InlineData("deadlock", "Deadlock", 126)]
    public void StatsJsonIsOneDocumentForEveryStopReason(string image, string reason, int code)
    {
        byte[] bytes = image switch
        {
            "exit" => Support.Asm(a => { a.mov(eax, 3); a.@out(0xF4, eax); a.hlt(); }),
            "limit" => [0xEB, 0xFE],
            "ud2" => [0x0F, 0x0B],
            "avx" => [0xC5, 0xFC, 0x58, 0xC0],
            _ => [0xFA, 0xF4],
        };
        string path = cli.Write($"json-{image}.elf", ElfBuilder.For(bytes).Build());
        var (exit, _, stderr) = Run("run", path, "--vcpus", "1", "--max-instructions", "100000", "--stats", "json");
        Assert.Equal(code, exit);
        using var doc = JsonDocument.Parse(stderr); // throws if anything else is on stderr
        Assert.Equal(reason, doc.RootElement.GetProperty("reason").GetString());
        Assert.Equal(code, doc.RootElement.GetProperty("exitCode").GetInt32());
        Assert.False(string.IsNullOrEmpty(doc.RootElement.GetProperty("message").GetString()));
    }

    [Theory]
    [InlineData("--vcpus", "0")]          // checked by the harness
    [InlineData("--vcpus", "abc")]        // rejected by the parser
    [InlineData("--frobnicate", null)]
    public void StatsJsonReportsBadArgumentsAsJson(string option, string? value)
    {
        string[] args = ["run", guest.ImagePath, "--stats", "json", option, .. (value is null ? Array.Empty<string>() : [value])];
        var (exit, _, stderr) = Run(args);
        Assert.Equal(2, exit);
        using var doc = JsonDocument.Parse(stderr);
        Assert.Contains(option, doc.RootElement.GetProperty("error").GetString());
        Assert.Equal(2, doc.RootElement.GetProperty("exitCode").GetInt32());
    }

    [Fact]
    public void AnUnknownOptionWhereTheImageGoesIsAnUnknownOption()
    {
        var (code, _, stderr) = Run("run", "--bogus");
        Assert.Equal(2, code);
        Assert.Contains("unknown option '--bogus'", stderr);
        Assert.DoesNotContain("image not found", stderr);
    }

    [Fact]
    public void ADirectoryIsNotAnImage()
    {
        var (code, _, stderr) = Run("run", cli.Dir);
        Assert.Equal(2, code);
        Assert.Contains($"{cli.Dir} is a directory", stderr);
    }

    [Fact]
    public void ATooSmallCodeCacheIsABadArgument()
    {
        var (code, _, stderr) = Run("run", guest.ImagePath, "--dbt", "default", "--dbt-cache-kib", "1");
        Assert.Equal(2, code);
        Assert.Contains("--dbt-cache-kib 1 is too small", stderr);
    }

    [Theory]
    [InlineData(1, "free")]
    [InlineData(2, "deterministic")]
    [InlineData(4, "free")]
    public void UnderTheDrkBaselineHandlersSeeNativePcsSoSmpDemoPasses(int vcpus, string exec)
    {
        // smp-demo's #BP, fixup and fault checks compare frame RIPs with native addresses: the DRK-style
        // configuration gives handlers native PCs, so it passes; default (the paper's design) does not.
        var (code, stdout, stderr) = Run("run", guest.ImagePath, "--vcpus", vcpus.ToString(), "--dbt", "drk", "--exec", exec, "--quantum", "500");
        Assert.True(code == 0, $"exit {code}; stderr: {stderr}");
        Assert.Equal(SampleGuestFixture.Expected(vcpus), stdout.ReplaceLineEndings("\n"));
        var fast = Run("run", guest.ImagePath, "--vcpus", vcpus.ToString(), "--dbt", "default", "--exec", exec, "--quantum", "500");
        Assert.NotEqual(0, fast.Code);
    }

    [Fact]
    public void AFailingTranslatedImageOutsideTheKernelContractGetsAHint()
    {
        // smp-demo compares interrupted RIPs with native addresses: under the DBT it fails, and says where the contract is.
        var (code, _, stderr) = Run("run", guest.ImagePath, "--vcpus", "1", "--dbt", "default");
        Assert.NotEqual(0, code);
        Assert.Contains("harness: hint:", stderr);
        Assert.Contains("docs/kernel-contract.md", stderr);
        var native = Run("run", guest.ImagePath, "--vcpus", "1");
        Assert.Equal(0, native.Code);
        Assert.DoesNotContain("hint", native.Stderr);
    }
}
