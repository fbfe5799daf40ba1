using System.Diagnostics;
using System.Text;
using Harness.Smp.Control;
using Iced.Intel;
using Xunit;

namespace Harness.Smp.Tests.Integration;

/// <summary>Shared helpers for the integration suite: repository paths, guest assembly, ELF writing, machine runs.</summary>
internal static class Support
{
    public const ulong Code = 0x100000;
    public const ulong Ram = 32UL << 20;

    public static string RepoRoot => global::Harness.Tests.Shared.HarnessCli.RepoRoot;

    public static string IntegrationDir => Path.Combine(RepoRoot, "tests", "Machine.Smp.Tests", "Integration");

    /// <summary>Assembles 64-bit code at the given address.</summary>
    public static byte[] Asm(Action<Assembler> body, ulong at = Code)
    {
        var a = new Assembler(64);
        body(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), at);
        return ms.ToArray();
    }

    public static Machine NewMachine(int vcpus, ExecutionControl control, Stream? console = null, long maxInstructions = 10_000_000) =>
        new(new MachineOptions
        {
            Vcpus = vcpus,
            MemoryBytes = Ram,
            ReservedBytes = 1UL << 20,
            Control = control,
            MaxInstructions = maxInstructions,
            Console = console,
        });

    /// <summary>Runs raw code at 0x100000 with a watchdog so a hung machine fails the test instead of the suite.</summary>
    public static RunResult RunCode(byte[] code, int vcpus = 1, ExecutionControl? control = null, long maxInstructions = 10_000_000,
        Action<Machine>? prepare = null, Stream? console = null)
    {
        using var m = NewMachine(vcpus, control ?? new Deterministic(100), console, maxInstructions);
        m.Memory.Write(Code, code);
        prepare?.Invoke(m);
        return RunWithWatchdog(m, entry: Code);
    }

    public static RunResult RunWithWatchdog(Machine m, ulong? entry = null, TimeSpan? limit = null)
    {
        using var cts = new CancellationTokenSource(limit ?? TimeSpan.FromSeconds(20));
        var r = m.Run(cts.Token, entry);
        Assert.False(r.Reason == Harness.Smp.Cpu.StopReason.Interrupted && cts.IsCancellationRequested,
            $"watchdog: the machine did not stop within {(limit ?? TimeSpan.FromSeconds(20)).TotalSeconds} s");
        return r;
    }

    public static string Hex(ulong v) => $"0x{v:x}";
}

/// <summary>Builds guest/build/samples/smp-demo.elf once (guest/build.sh) for the whole suite.</summary>
public sealed class SampleGuestFixture
{
    private readonly Lazy<byte[]> image;

    public SampleGuestFixture() => image = new(Build, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The built image's path (building it first).</summary>
    public string ImagePath { get { _ = image.Value; return PathOf; } }

    private static string PathOf => Path.Combine(Support.RepoRoot, "guest", "build", "samples", "smp-demo.elf");

    public byte[] Image => image.Value;

    private byte[] Build()
    {
        string script = Path.Combine(Support.RepoRoot, "guest", "build.sh");
        var psi = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Support.RepoRoot };
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"guest/build.sh failed (exit {p.ExitCode}): {stderr.Result.Trim()}\n{stdout.Trim()}");
        return File.ReadAllBytes(PathOf);
    }

    /// <summary>The expected console output for n vCPUs, from the checked-in 2-vCPU file.</summary>
    public static string Expected(int n)
    {
        string template = File.ReadAllText(Path.Combine(Support.IntegrationDir, "smp-demo.expected.txt")).ReplaceLineEndings("\n");
        var sb = new StringBuilder();
        bool cpusDone = false;
        foreach (var line in template.Split('\n'))
        {
            if (line.StartsWith("cpu ") && line.Contains(": apic-id "))
            {
                if (cpusDone) continue;
                cpusDone = true;
                for (int k = 0; k < n; k++) sb.Append($"cpu {k}: apic-id {k} ticks>=3 ok\n");
            }
            else if (line.StartsWith("cpus: ")) sb.Append($"cpus: {n}\n");
            else if (line.StartsWith("counter: ")) sb.Append($"counter: {1000 * n}\n");
            else if (line.Length > 0) sb.Append(line).Append('\n');
        }
        return sb.ToString();
    }
}

[CollectionDefinition(Name)]
public sealed class SampleGuestCollection : ICollectionFixture<SampleGuestFixture>
{
    public const string Name = "sample guest";
}

/// <summary>Runs the built harness CLI (tests/Shared/HarnessCli.cs: rebuilt first when missing or stale).</summary>
public sealed class CliFixture
{
    public string Dll => global::Harness.Tests.Shared.HarnessCli.Dll;

    public (int Code, string Stdout, string Stderr) Run(params string[] args) => global::Harness.Tests.Shared.HarnessCli.Run(TimeSpan.FromSeconds(60), args);

    public static (int, string, string) Exec(string file, string[] args, TimeSpan timeout) => global::Harness.Tests.Shared.HarnessCli.Exec(file, args, timeout);
}
