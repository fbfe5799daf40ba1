using Harness.Tests.Shared;
using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Integration;

/// <summary>Invalid and unsupported instructions, and exceptions thrown by host call-outs.</summary>
public class FaultTests
{
    const ulong Idt = 0x110000, Idtr = 0x120000, UdHandler = 0x101000;

    public static TheoryData<string> InvalidEncodings => new()
    {
        "0f 0b",        // ud2
        "06",           // push es: invalid in 64-bit mode
        "d6",           // salc: invalid in 64-bit mode
        "0f ff c0",     // ud0
        "0f 04",        // unassigned two-byte opcode
    };

    static byte[] Bytes(string hex) => Convert.FromHexString(hex.Replace(" ", ""));

    static void WriteIdtGate(Machine m, int vector, ulong handler)
    {
        var g = new byte[16];
        BitConverter.GetBytes((ushort)handler).CopyTo(g, 0);
        BitConverter.GetBytes((ushort)0x08).CopyTo(g, 2);
        g[5] = 0x8E;
        BitConverter.GetBytes((ushort)(handler >> 16)).CopyTo(g, 6);
        BitConverter.GetBytes((uint)(handler >> 32)).CopyTo(g, 8);
        m.Memory.Write(Idt + (ulong)vector * 16, g);
    }

    [Theory]
    [MemberData(nameof(InvalidEncodings))]
    public void InvalidOpcodeIsDeliveredToTheGuestAtTheFaultingRip(string encoding)
    {
        // lidt, then the invalid bytes; the #UD handler exits with the RIP from its frame.
        var prefix = Support.Asm(a => { a.mov(rax, Idtr); a.lidt(__[rax]); a.nop(); });
        ulong faultRip = Support.Code + (ulong)prefix.Length;
        var code = prefix.Concat(Bytes(encoding)).Concat(Bytes("f4")).ToArray();
        var handler = Support.Asm(a => { a.mov(rax, __qword_ptr[rsp]); a.@out(0xF4, eax); a.hlt(); }, UdHandler);
        var r = Support.RunCode(code, prepare: m =>
        {
            m.Memory.Write(UdHandler, handler);
            WriteIdtGate(m, Vectors.UD, UdHandler);
            var idtr = new byte[10];
            BitConverter.GetBytes((ushort)(256 * 16 - 1)).CopyTo(idtr, 0);
            BitConverter.GetBytes(Idt).CopyTo(idtr, 2);
            m.Memory.Write(Idtr, idtr);
        });
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal(Support.Hex(faultRip), Support.Hex((ulong)(uint)r.ExitStatus));
        Assert.Equal(1, r.Vcpus[0].Exceptions);
    }

    [Theory]
    [MemberData(nameof(InvalidEncodings))]
    public void InvalidOpcodeWithoutAnIdtTripleFaultsNamingRipAndBytes(string encoding)
    {
        var code = Bytes("90 90 90").Concat(Bytes(encoding)).ToArray();
        var r = Support.RunCode(code);
        Assert.True(r.Reason == StopReason.TripleFault, $"{r.Reason}: {r.Message}");
        Assert.Contains("#UD", r.Message);
        Assert.Contains("rip 0x100003", r.Message);
        Assert.Contains("bytes " + encoding, r.Message);
        Assert.Contains("vCPU 0", r.Message);
    }

    [Theory]
    [InlineData("0f 28 c1", "movaps")]         // SSE movaps xmm0, xmm1
    [InlineData("d9 e8", "fld1")]              // x87
    [InlineData("66 0f ef c0", "pxor")]        // SSE2 pxor xmm0, xmm0
    public void UnsupportedInstructionStopsNamingAddressBytesAndMnemonic(string encoding, string mnemonic)
    {
        var code = Bytes("90 90 90 90").Concat(Bytes(encoding)).Concat(Bytes("f4")).ToArray();
        foreach (var control in new ExecutionControl[] { new Deterministic(100), new FreeRunning() })
        {
            var r = Support.RunCode(code, control: control);
            Assert.True(r.Reason == StopReason.Unsupported, $"{control.Name}: {r.Reason}: {r.Message}");
            Assert.Contains("0x100004", r.Message);
            Assert.Contains(encoding, r.Message);
            Assert.Contains(mnemonic, r.Message);
            Assert.Contains("vCPU 0", r.Message);
            Assert.Null(r.HostException);
        }
    }

    static byte[] VmcallGuest() => Support.Asm(a => { a.nop(); a.nop(); a.vmcall(); a.mov(eax, 7); a.@out(0xF4, eax); a.hlt(); });

    [Fact]
    public void VmcallHandlerRunsAndExecutionContinues()
    {
        int calls = 0;
        var r = Support.RunCode(VmcallGuest(), prepare: m => m.OnVmcall(v => { calls++; Assert.Equal(0, v.Index); }));
        Assert.Equal(StopReason.Exited, r.Reason);
        Assert.Equal(7, r.ExitStatus);
        Assert.Equal(1, calls);
    }

    /// <summary>
    /// The host-agent seam: agents are asked in attach order and the first that handles a vmcall
    /// ends it; a vmcall no agent handles (or with none that implements the hook) is #UD at the vmcall.
    /// </summary>
    [Fact]
    public void VmcallGoesToTheFirstAgentThatHandlesItAndUnhandledIsUd()
    {
        var order = new List<string>();
        var r = Support.RunCode(VmcallGuest(), prepare: m =>
        {
            m.OnBlockDecoded((_, _, _) => { }); // implements no vmcall: never asked
            m.Attach(new HookAgent { OnVmcall = _ => { order.Add("declines"); return false; } });
            m.Attach(new HookAgent { OnVmcall = _ => { order.Add("handles"); return true; } });
            m.Attach(new HookAgent { OnVmcall = _ => { order.Add("never asked"); return true; } });
        });
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == 7, $"{r.Reason}: {r.Message}");
        Assert.Equal(["declines", "handles"], order);

        foreach (Action<Machine> prepare in new Action<Machine>[] { _ => { }, m => m.Attach(new HookAgent { OnVmcall = _ => false }) })
        {
            var ud = Support.RunCode(VmcallGuest(), prepare: prepare);
            Assert.True(ud.Reason == StopReason.TripleFault, $"{ud.Reason}: {ud.Message}");
            Assert.Contains("#UD", ud.Message);
            Assert.Contains("rip 0x100002", ud.Message);
        }
    }

    /// <summary>
    /// Host events are per agent: two agents' events both fire, each at its own exact instruction
    /// boundary, whatever the order they were scheduled in; a detached agent's pending event never fires.
    /// </summary>
    [Fact]
    public void HostEventsOfDifferentAgentsAreIndependent()
    {
        var loop = Support.Asm(a =>
        {
            var top = a.CreateLabel();
            a.mov(ecx, 100_000);
            a.Label(ref top);
            a.dec(ecx);
            a.jnz(top);
            a.mov(eax, 0);
            a.@out(0xF4, eax);
            a.hlt();
        });
        var seen = new List<(string, long)>();
        var r = Support.RunCode(loop, prepare: m =>
        {
            m.At(2_000, v => seen.Add(("late", v.Retired)));
            m.At(1_000, v => seen.Add(("early", v.Retired)));
            var gone = m.At(1_500, v => seen.Add(("detached", v.Retired)));
            m.Detach(gone);
        });
        Assert.True(r.Reason == StopReason.Exited, $"{r.Reason}: {r.Message}");
        Assert.Equal([("early", 1_000L), ("late", 2_000L)], seen);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void HostExceptionInVmcallStopsWithHostError(bool free)
    {
        var boom = new InvalidOperationException("boom");
        var r = Support.RunCode(VmcallGuest(), control: free ? new FreeRunning() : new Deterministic(100), prepare: m => m.OnVmcall(_ => throw boom));
        Assert.True(r.Reason == StopReason.HostError, $"{r.Reason}: {r.Message}");
        Assert.Same(boom, r.HostException);
        Assert.Contains("vCPU 0", r.Message);
        Assert.Contains("boom", r.Message);
        Assert.Contains("InvalidOperationException", r.Message);
        // The vmcall is at 0x100002 (after two nops). The machine currently reports the RIP after it
        // (0x100005): SystemOps.Vmcall sets RIP = NextIp before calling the handler, and
        // Machine.HostFault reports v.Rip. Reported as a bug; accept both until it is fixed.
        AssertNamesVmcallRip(r.Message, 0x100002, 3);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void HostExceptionOnAnApNamesThatVcpu(bool free)
    {
        var boom = new InvalidOperationException("boom on the AP");
        var ap = 0x102000UL;
        var apCode = Support.Asm(a => { a.nop(); a.vmcall(); a.hlt(); }, ap);
        var bsp = Support.Asm(a =>
        {
            var spin = a.CreateLabel();
            a.mov(rax, ap);
            a.mov(__qword_ptr[rdi + 64 + 24], rax);
            a.mov(rax, 0x300000UL);
            a.mov(__qword_ptr[rdi + 64 + 32], rax);
            a.mov(ecx, 0x830);
            a.mov(eax, 0x600);
            a.mov(edx, 1);
            a.wrmsr();
            a.Label(ref spin);
            a.pause();
            a.jmp(spin);
        });
        var r = Support.RunCode(bsp, vcpus: 2, control: free ? new FreeRunning() : new Deterministic(100), prepare: m =>
        {
            m.Memory.Write(ap, apCode);
            m.OnVmcall(v => { if (v.Index == 1) throw boom; });
        });
        Assert.True(r.Reason == StopReason.HostError, $"{r.Reason}: {r.Message}");
        Assert.Same(boom, r.HostException);
        Assert.Contains("vCPU 1", r.Message);
        AssertNamesVmcallRip(r.Message, 0x102001, 3);
    }

    static void AssertNamesVmcallRip(string message, ulong vmcall, int length) =>
        Assert.True(message.Contains($"rip 0x{vmcall:x}") && !message.Contains($"rip 0x{vmcall + (ulong)length:x}"),
            $"message does not name the vmcall's own rip 0x{vmcall:x}: {message}");

    [Fact]
    public void VmcallWithoutHandlerIsInvalidOpcode()
    {
        var r = Support.RunCode(VmcallGuest());
        Assert.True(r.Reason == StopReason.TripleFault, $"{r.Reason}: {r.Message}");
        Assert.Contains("#UD at rip 0x100002", r.Message);
        Assert.Contains("0f 01 c1", r.Message);
    }
}
