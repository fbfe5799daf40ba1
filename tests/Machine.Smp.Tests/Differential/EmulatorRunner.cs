// Runs a code snippet on the emulated machine with the same register/flag/scratch contract as
// NativeRunner: the scratch page is mapped at the SAME virtual address as the host's scratch page
// (NativeRunner.ScratchAddress), so addresses, lea results and string pointers agree.

using Harness.Smp.Boot;
using Harness.Smp.Control;
using Harness.Smp.Tests.Native;


namespace Harness.Smp.Tests.Differential;

public sealed record EmulatorResult(RunResult Run, NativeState State, byte[] Scratch);

public static class EmulatorRunner
{
    public const ulong CodeAddress = 0x100000;
    public const ulong ScratchPhys = 0x200000;
    // Page-table pages for the scratch mapping (free guest memory; the machine uses 0x1000-0x5FFF and 0x70000-0x80000).
    const ulong TablePages = 0x10000;
    const ulong P = 1, RW = 2, PS = 0x80;
    public static readonly byte[] ExitCode = [0xE7, 0xF4]; // out 0xF4, eax

    public static EmulatorResult Run(ReadOnlySpan<byte> code, NativeState input, ReadOnlySpan<byte> scratchIn,
        Smp.Compile.BlockCompilation compile = Smp.Compile.BlockCompilation.Off, Smp.Compile.CompilerPlant plant = Smp.Compile.CompilerPlant.None)
    {
        using var m = new Machine(new MachineOptions
        {
            Vcpus = 1,
            MemoryBytes = 4UL << 20,
            ReservedBytes = 1UL << 20,
            Control = new Deterministic(quantum: 1_000_000),
            MaxInstructions = 100_000,
            Compile = compile,
            CompilerPlant = plant,
        });
        MapScratch(m);
        var full = new byte[code.Length + ExitCode.Length];
        code.CopyTo(full);
        ExitCode.CopyTo(full.AsSpan(code.Length));
        m.Memory.Write(CodeAddress, full);
        var page = new byte[NativeRunner.ScratchSize];
        scratchIn.CopyTo(page);
        m.Memory.Write(ScratchPhys, page);

        var r = m.Run(entry: CodeAddress, setup: v =>
        {
            for (int i = 0; i < 16; i++) v.Gpr(i) = input.Gpr[i];
            v.Rflags = (input.Rflags & NativeState.FlagsMask) | 2;
        });
        var cpu = m.Vcpus[0];
        var state = new NativeState { Rflags = cpu.Rflags & NativeState.FlagsMask };
        for (int i = 0; i < 16; i++) state.Gpr[i] = cpu.Gpr(i);
        return new EmulatorResult(r, state, m.Memory.Span(ScratchPhys, NativeRunner.ScratchSize).ToArray());
    }

    /// <summary>Maps NativeRunner.ScratchAddress -> ScratchPhys with 4 KiB pages, reusing present table levels.</summary>
    static void MapScratch(Machine m)
    {
        ulong va = NativeRunner.ScratchAddress;
        ulong next = TablePages;
        ulong table = BootLayout.Pml4;
        for (int level = 3; level >= 1; level--)
        {
            ulong idx = (va >> (12 + 9 * level)) & 511;
            ulong entryAddr = table + idx * 8;
            ulong e = m.Memory.ReadU64(entryAddr);
            if ((e & P) != 0)
            {
                if ((e & PS) != 0) throw new InvalidOperationException($"scratch address 0x{va:x} falls inside a large-page mapping of the boot page tables");
                table = e & 0x000F_FFFF_FFFF_F000;
            }
            else
            {
                m.Memory.Span(next, 4096).Clear();
                m.Memory.WriteU64(entryAddr, next | P | RW);
                table = next;
                next += 0x1000;
            }
        }
        m.Memory.WriteU64(table + ((va >> 12) & 511) * 8, ScratchPhys | P | RW);
    }
}
