using System.Diagnostics;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>Guests that never exit: the instruction limit and host cancellation stop them.</summary>
public class RunawayTests
{
    static readonly byte[] JmpSelf = [0xEB, 0xFE]; // jmp $

    /// <summary>BSP starts AP 1 on a jmp $ of its own, then loops forever itself.</summary>
    static byte[] TwoSpinners() => Support.Asm(a =>
    {
        var ap = a.CreateLabel();
        var self = a.CreateLabel();
        a.lea(rax, __[ap]);
        a.mov(__qword_ptr[rdi + 64 + 24], rax);
        a.mov(rax, 0x300000UL);
        a.mov(__qword_ptr[rdi + 64 + 32], rax);
        a.mov(ecx, 0x830);
        a.mov(eax, 0x600);
        a.mov(edx, 1);
        a.wrmsr();
        a.Label(ref self);
        a.jmp(self);
        a.Label(ref ap);
        a.pause();
        a.jmp(ap);
    });

    public static TheoryData<string> Controls => new() { "free", "deterministic" };

    static ExecutionControl Control(string name) => name == "free" ? new FreeRunning() : new Deterministic(100);

    [Theory]
    [MemberData(nameof(Controls))]
    public void InstructionLimitStopsJmpSelf(string control)
    {
        var r = Support.RunCode(JmpSelf, control: Control(control), maxInstructions: 100_000);
        Assert.True(r.Reason == StopReason.InstructionLimit, $"{r.Reason}: {r.Message}");
        Assert.Equal(100_000, r.Vcpus[0].Instructions);
        Assert.Contains("instruction limit", r.Message);
        Assert.Contains("rip 0x100000", r.Message);
    }

    [Theory]
    [MemberData(nameof(Controls))]
    public void InstructionLimitIsPerVcpu(string control)
    {
        var r = Support.RunCode(TwoSpinners(), vcpus: 2, control: Control(control), maxInstructions: 100_000);
        Assert.True(r.Reason == StopReason.InstructionLimit, $"{r.Reason}: {r.Message}");
        Assert.True(r.Vcpus[1].Started);
        Assert.Equal(100_000, r.Vcpus.Max(v => v.Instructions));
    }

    [Fact]
    public void DeterministicInstructionLimitIsReproducible()
    {
        var a = Support.RunCode(TwoSpinners(), vcpus: 2, control: new Deterministic(7), maxInstructions: 100_000);
        var b = Support.RunCode(TwoSpinners(), vcpus: 2, control: new Deterministic(7), maxInstructions: 100_000);
        Assert.Equal(a.Message, b.Message);
        Assert.Equal(a.Vcpus.Select(v => v.Instructions), b.Vcpus.Select(v => v.Instructions));
    }

    [Theory]
    [InlineData("free", 1)]
    [InlineData("free", 2)]
    [InlineData("deterministic", 1)]
    [InlineData("deterministic", 2)]
    public async Task CancellationInterruptsAnInfiniteLoop(string control, int vcpus)
    {
        using var m = Support.NewMachine(vcpus, Control(control), maxInstructions: 0);
        m.Memory.Write(Support.Code, vcpus == 1 ? JmpSelf : TwoSpinners());
        using var cts = new CancellationTokenSource();
        var sw = Stopwatch.StartNew();
        // The clock starts when the BSP does (setup hook), on a dedicated thread: a busy thread
        // pool must not eat the 200 ms before the guest runs.
        var run = OnThread(() => m.Run(cts.Token, entry: Support.Code, setup: _ => cts.CancelAfter(TimeSpan.FromMilliseconds(200))));
        Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(10))) == run, "the machine did not stop within 10 s of the cancellation");
        sw.Stop();
        var r = await run;
        Assert.True(r.Reason == StopReason.Interrupted, $"{r.Reason}: {r.Message}");
        Assert.InRange(sw.Elapsed, TimeSpan.FromMilliseconds(150), TimeSpan.FromSeconds(5));
        Assert.True(r.Vcpus[0].Instructions > 1000, "the guest barely ran");
        if (vcpus == 2) Assert.True(r.Vcpus[1].Started && r.Vcpus[1].Instructions > 0);
    }

    static Task<RunResult> OnThread(Func<RunResult> body)
    {
        var tcs = new TaskCompletionSource<RunResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        new Thread(() => { try { tcs.SetResult(body()); } catch (Exception e) { tcs.SetException(e); } }) { IsBackground = true }.Start();
        return tcs.Task;
    }

    [Fact]
    public async Task AlreadyCancelledTokenStopsImmediately()
    {
        using var m = Support.NewMachine(1, new FreeRunning(), maxInstructions: 0);
        m.Memory.Write(Support.Code, JmpSelf);
        var run = Task.Run(() => m.Run(new CancellationToken(true), entry: Support.Code));
        Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(10))) == run, "the machine did not stop with a cancelled token");
        Assert.Equal(StopReason.Interrupted, (await run).Reason);
    }

    [Theory]
    [MemberData(nameof(Controls))]
    public void HaltWithInterruptsOffIsADeadlock(string control)
    {
        var r = Support.RunCode([0xFA, 0xF4], control: Control(control)); // cli; hlt
        Assert.True(r.Reason == StopReason.Deadlock, $"{r.Reason}: {r.Message}");
    }
}
