using Harness.Tests.Shared;
using Harness.Smp;
using Harness.Smp.Control;
using Iced.Intel;

namespace Harness.Dbt.Tests;

internal static class Support
{
    public const ulong Alias = 0xFFFF_FFFF_8000_0000;
    public const ulong CodePhys = 0x200000, DataPhys = 0x300000, StackTopPhys = 0x380000;
    public const ulong Code = Alias + CodePhys, Data = Alias + DataPhys, StackTop = Alias + StackTopPhys;

    public static string RepoRoot => global::Harness.Tests.Shared.HarnessCli.RepoRoot;

    public static string ComputeElf => Path.Combine(RepoRoot, "guest", "build", "samples", "compute.elf");

    public static ExecutionControl Control(string name) => name == "det" ? new Deterministic(quantum: 100) : new FreeRunning();

    /// <summary>Assembles ring-0 code at Code (in the -2 GiB alias, like a kernel).</summary>
    public static byte[] Asm(Action<Assembler> body)
    {
        var a = new Assembler(64);
        body(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), Code);
        return ms.ToArray();
    }

    public sealed record SnippetRun(RunResult Result, byte[] DataPage, KernelDbt? Dbt, long NativeDecodes);

    /// <summary>Runs a snippet natively or translated; counts blocks the interpreter decoded outside the code cache.</summary>
    public static SnippetRun Run(byte[] code, bool translate, DbtOptions? options = null, byte[]? data = null, int vcpus = 1)
    {
        using var m = new Machine(new MachineOptions
        {
            Vcpus = vcpus, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20,
            Control = new Deterministic(quantum: 100), MaxInstructions = 50_000_000,
        });
        m.Memory.Write(CodePhys, code);
        if (data is not null) m.Memory.Write(DataPhys, data);
        KernelDbt? dbt = translate ? KernelDbt.Attach(m, options) : null;
        long outside = 0;
        ulong rb = m.ReservedBase, rs = m.ReservedSize;
        m.OnBlockDecoded((_, _, pa) => { if (pa - rb >= rs) Interlocked.Increment(ref outside); });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var r = m.Run(cts.Token, entry: Code, setup: v => v.Gpr(4) = StackTop);
        return new SnippetRun(r, m.Memory.Span(DataPhys, 4096).ToArray(), dbt, outside);
    }

    public static void Exit(Assembler a, uint status = 0)
    {
        a.mov(AssemblerRegisters.eax, status);
        a.@out(0xF4, AssemblerRegisters.eax);
        a.hlt();
    }
}
