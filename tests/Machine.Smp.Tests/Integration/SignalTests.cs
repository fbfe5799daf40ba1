using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Harness.Tests.Shared;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>
/// SIGINT, SIGTERM and SIGHUP stop `harness run` cleanly: the stop line, the tables and the
/// statistics are printed (or the one JSON document), and the exit code is 128 + the signal.
/// </summary>
public class SignalTests(ITestOutputHelper output) : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("harness-signal-tests-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
    }

    private const ulong Alias = 0xFFFF_FFFF_8000_0000, Phys = 0x100000;

    /// <summary>Ring-0 code in the -2 GiB alias (so it also runs under the DBT): prints "ready", then spins forever.</summary>
    private string SpinImage()
    {
        var code = Support.Asm(a =>
        {
            var spin = a.CreateLabel();
            foreach (char c in "ready\n") { a.mov(al, (byte)c); a.@out(0xE9, al); }
            a.Label(ref spin);
            a.jmp(spin);
        }, Alias + Phys);
        string path = Path.Combine(dir, "spin.elf");
        File.WriteAllBytes(path, ElfBuilder.Linked(code, Alias + Phys, Phys).Build());
        return path;
    }

    /// <summary>Caught signals of a process (the SigCgt mask of /proc/PID/status).</summary>
    private static ulong CaughtSignals(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("SigCgt:", StringComparison.Ordinal)) return Convert.ToUInt64(line[7..].Trim(), 16);
        }
        catch (IOException) { }
        return 0;
    }

    private (int Code, string Stdout, string Stderr) RunAndSignal(string signal, bool early, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet", [HarnessCli.Dll, "run", .. args])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = HarnessCli.RepoRoot,
            StandardOutputEncoding = Encoding.UTF8, StandardErrorEncoding = Encoding.UTF8,
        };
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = new StringBuilder();
        var ready = new TaskCompletionSource();
        p.OutputDataReceived += (_, e) => { if (e.Data is null) return; lock (stdout) stdout.AppendLine(e.Data); if (e.Data == "ready") ready.TrySetResult(); };
        p.BeginOutputReadLine();
        try
        {
            if (early)
            {
                // As early as the harness can handle it: once its handler for SIGHUP (bit 0, which
                // the runtime does not catch by itself) shows up, before the machine has run.
                var sw = Stopwatch.StartNew();
                while ((CaughtSignals(p.Id) & 1) == 0 && sw.Elapsed < TimeSpan.FromSeconds(20) && !p.HasExited) Thread.Sleep(1);
                Assert.True((CaughtSignals(p.Id) & 1) != 0, "the harness never installed its signal handlers");
            }
            else Assert.True(ready.Task.Wait(TimeSpan.FromSeconds(30)), "the guest never printed 'ready'");
            Assert.False(p.HasExited, "the run ended before the signal");
            var kill = Process.Start("kill", ["-" + signal, p.Id.ToString()])!;
            kill.WaitForExit();
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(30)), $"SIG{signal} did not stop the run within 30 s");
            p.WaitForExit();
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
        string err = stderr.Result, outText;
        lock (stdout) outText = stdout.ToString();
        output.WriteLine($"SIG{signal}{(early ? " (early)" : "")}: exit {p.ExitCode}\n--- stdout\n{outText}\n--- stderr\n{err}");
        return (p.ExitCode, outText, err);
    }

    [Theory]
    [InlineData("TERM", 143, "off")]
    [InlineData("HUP", 129, "off")]
    [InlineData("INT", 130, "off")]
    [InlineData("TERM", 143, "default")]
    public void ASignalStopsTheRunAndKeepsTheReport(string signal, int code, string dbt)
    {
        var (exit, stdout, stderr) = RunAndSignal(signal, early: false, SpinImage(), "--vcpus", "1", "--dbt", dbt, "--stats");
        Assert.Equal(code, exit);
        Assert.Contains("ready", stdout);
        Assert.Contains($"machine stopped: Interrupted: received SIG{signal}", stderr);
        Assert.Contains("stop Interrupted", stderr);
        if (dbt != "off") Assert.Contains("dbt: blocks=", stderr);
    }

    [Theory]
    [InlineData("INT", 130)]
    [InlineData("TERM", 143)]
    public void ASignalBeforeTheMachineRunsStillPrintsTheReport(string signal, int code)
    {
        var (exit, _, stderr) = RunAndSignal(signal, early: true, SpinImage(), "--vcpus", "1", "--dbt", "default", "--stats");
        Assert.Equal(code, exit);
        Assert.Contains("Interrupted", stderr);
        Assert.Contains($"SIG{signal}", stderr);
    }

    [Fact]
    public void UnderStatsJsonASignalIsInsideTheDocument()
    {
        var (exit, _, stderr) = RunAndSignal("TERM", early: false, SpinImage(), "--vcpus", "1", "--stats", "json");
        Assert.Equal(143, exit);
        using var doc = JsonDocument.Parse(stderr);
        Assert.Equal("Interrupted", doc.RootElement.GetProperty("reason").GetString());
        Assert.Equal("SIGTERM", doc.RootElement.GetProperty("signal").GetString());
        Assert.Equal(143, doc.RootElement.GetProperty("exitCode").GetInt32());
    }
}
