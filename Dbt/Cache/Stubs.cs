using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Cache;

/// <summary>Shared code in the stub page, assembled once with Iced's Assembler.</summary>
internal static class Stubs
{

    /// <summary>"popfq; jmp qword gs:[tx-nextpc-loc]": every dispatcher exit (registers and stack already the kernel's).</summary>
    public static byte[] Exit(ulong at, PerCpu perCpu) => Assemble(at, a =>
    {
        a.popfq();
        a.jmp(__qword_ptr.gs[(long)perCpu.TxNextPcLoc]);
    });

    /// <summary>"cli; hlt; jmp back to the hlt": where a vCPU the dispatcher has given up on stops for good.</summary>
    public static byte[] DeadEnd(ulong at) => Assemble(at, a =>
    {
        var hlt = a.CreateLabel();
        a.cli();
        a.Label(ref hlt);
        a.hlt();
        a.jmp(hlt);
    });

    /// <summary>"pushfq; cli; vmcall": how every edge stub and dispatcher entry enters the dispatcher.</summary>
    public static byte[] DispatcherEntry() => Assemble(0, a =>
    {
        a.pushfq();
        a.cli();
        a.vmcall();
    });

    /// <summary>The DRK-style configuration's iretq exit and syscall entry.</summary>
    public static byte[] Iretq(ulong at) => Assemble(at, a => a.iretq());
    public static byte[] Vmcall(ulong at) => Assemble(at, a => a.vmcall());

    private static byte[] Assemble(ulong at, Action<Assembler> body)
    {
        var a = new Assembler(64);
        body(a);
        var w = new Writer();
        a.Assemble(w, at);
        return w.Bytes.ToArray();
    }

    internal sealed class Writer : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }
}
