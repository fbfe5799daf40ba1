// Native-execution oracle for differential tests: runs short x86-64 code snippets directly on the
// host CPU (x86-64 Linux only) and reports the resulting register file, flags and scratch memory.
//
// WARNING: the code is executed for real inside the test process. Any fault (#DE from a division by
// zero or overflow, #GP, #UD, a page fault from an access outside the scratch page, a stray jump,
// an infinite loop, touching RSP, ...) will crash or hang the whole test host. Callers must only
// pass code that is known not to fault: no RSP use, memory operands only inside the scratch page,
// no divisions that can trap, no privileged instructions, and control flow that falls off the end.

using System.Runtime.InteropServices;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Native;

/// <summary>Architectural state exchanged with <see cref="NativeRunner"/>.</summary>
public sealed class NativeState
{
    /// <summary>CF | PF | AF | ZF | SF | DF | OF: the only RFLAGS bits that are loaded and reported.</summary>
    public const ulong FlagsMask = 0xCD5;

    public const ulong CF = 1UL << 0, PF = 1UL << 2, AF = 1UL << 4, ZF = 1UL << 6,
        SF = 1UL << 7, DF = 1UL << 10, OF = 1UL << 11;

    /// <summary>16 GPRs in encoding order: rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15.</summary>
    public ulong[] Gpr = new ulong[16];

    /// <summary>Only the bits in <see cref="FlagsMask"/> are loaded; on output only those bits are reported.</summary>
    public ulong Rflags;

    public NativeState Clone() => new() { Gpr = (ulong[])Gpr.Clone(), Rflags = Rflags };

    public override string ToString()
    {
        string[] names = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < 16; i++) sb.Append(names[i]).Append('=').Append(Gpr[i].ToString("X16")).Append(' ');
        sb.Append("rflags=").Append(Rflags.ToString("X"));
        return sb.ToString();
    }
}

/// <summary>Memory layout shared with the generated prologue/epilogue (offsets are hard-coded there).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct NativeStateBlock
{
    public fixed ulong Gpr[16];   // offset 8*i
    public ulong Rflags;          // offset 128
}

public static unsafe class NativeRunner
{
    public const int ScratchSize = 4096;

    const int RflagsOffset = 128;
    const int PageSize = 4096;
    const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    const int MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20;

    [DllImport("libc", SetLastError = true)]
    static extern nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [DllImport("libc", SetLastError = true)]
    static extern int mprotect(nint addr, nuint length, int prot);

    [DllImport("libc", SetLastError = true)]
    static extern int munmap(nint addr, nuint length);

    static readonly object Gate = new();
    static readonly byte[] Prologue;
    static readonly byte[] Epilogue;
    static readonly nint Scratch;
    static nint codeRegion;      // guarded by Gate
    static nuint codeRegionSize; // guarded by Gate

    /// <summary>Host virtual address of the 4 KiB RW scratch page; fixed for the life of the process.</summary>
    public static ulong ScratchAddress => (ulong)Scratch;

    /// <summary>Size in bytes of the fixed prologue + epilogue wrapped around the user code.</summary>
    public static int WrapperSize => Prologue.Length + Epilogue.Length;

    static NativeRunner()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            throw new PlatformNotSupportedException("NativeRunner needs x86-64 Linux.");
        Scratch = Map(ScratchSize, PROT_READ | PROT_WRITE);
        if ((ulong)Scratch >= 1UL << 47) throw new InvalidOperationException("scratch page above 2^47");
        Prologue = BuildPrologue();
        Epilogue = BuildEpilogue();
        codeRegionSize = 64 * 1024;
        codeRegion = Map(codeRegionSize, PROT_READ | PROT_EXEC);
    }

    static nint Map(nuint size, int prot)
    {
        nint p = mmap(0, size, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == -1) throw new InvalidOperationException($"mmap failed, errno {Marshal.GetLastPInvokeError()}");
        return p;
    }

    static void Protect(nint addr, nuint size, int prot)
    {
        if (mprotect(addr, size, prot) != 0)
            throw new InvalidOperationException($"mprotect failed, errno {Marshal.GetLastPInvokeError()}");
    }

    static byte[] Assemble(Assembler a)
    {
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), 0);
        return ms.ToArray();
    }

    // Order of GPR loads/stores: everything but RSP (4); RDI (7) is handled specially.
    static readonly int[] Order = [0, 1, 2, 3, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];

    static AssemblerRegister64 Reg(int i) => i switch
    {
        0 => rax, 1 => rcx, 2 => rdx, 3 => rbx, 4 => rsp, 5 => rbp, 6 => rsi, 7 => rdi,
        8 => r8, 9 => r9, 10 => r10, 11 => r11, 12 => r12, 13 => r13, 14 => r14, _ => r15,
    };

    // Entry (SysV): rdi = NativeStateBlock*. Stack at entry is 8 mod 16.
    // Frame after prologue (from rsp upward): [rsp] = block ptr, [rsp+8] = host mxcsr, [rsp+12] = host x87 cw,
    // [rsp+16] = padding, [rsp+24..] = r15, r14, r13, r12, rbp, rbx, return address.
    // rsp is 16-byte aligned while the user code runs.
    static byte[] BuildPrologue()
    {
        var a = new Assembler(64);
        a.push(rbx); a.push(rbp); a.push(r12); a.push(r13); a.push(r14); a.push(r15);   // rsp = 8 mod 16
        a.sub(rsp, 16);                                                                  // rsp = 8 mod 16
        a.stmxcsr(__dword_ptr[rsp]);
        a.fnstcw(__word_ptr[rsp + 4]);
        a.push(rdi);                                                                     // rsp = 0 mod 16
        // RFLAGS = (host & ~mask) | (block & mask): keeps IF/TF/AC/ID etc. as the host has them.
        a.pushfq();
        a.pop(rax);
        a.and(rax, ~(int)NativeState.FlagsMask);
        a.mov(rcx, __qword_ptr[rdi + RflagsOffset]);
        a.and(rcx, (int)NativeState.FlagsMask);
        a.or(rax, rcx);
        a.push(rax);
        a.popfq();
        foreach (int i in Order) a.mov(Reg(i), __qword_ptr[rdi + 8 * i]);              // mov does not touch flags
        a.mov(rdi, __qword_ptr[rdi + 8 * 7]);
        return Assemble(a);
    }

    static byte[] BuildEpilogue()
    {
        var a = new Assembler(64);
        a.xchg(__qword_ptr[rsp], rdi);           // rdi = block, [rsp] = program's rdi (xchg leaves flags alone)
        a.pushfq();
        foreach (int i in Order) a.mov(__qword_ptr[rdi + 8 * i], Reg(i));
        a.pop(rax);
        a.mov(__qword_ptr[rdi + RflagsOffset], rax);
        a.pop(rax);
        a.mov(__qword_ptr[rdi + 8 * 7], rax);
        a.fldcw(__word_ptr[rsp + 4]);
        a.ldmxcsr(__dword_ptr[rsp]);
        a.add(rsp, 16);
        a.pop(r15); a.pop(r14); a.pop(r13); a.pop(r12); a.pop(rbp); a.pop(rbx);
        a.cld();
        a.ret();
        return Assemble(a);
    }

    /// <summary>
    /// Copies <paramref name="scratchIn"/> (rest zero) into the scratch page, loads every GPR except RSP
    /// and the flags in <see cref="NativeState.FlagsMask"/> from <paramref name="input"/>, executes
    /// <paramref name="code"/> natively (it must fall off its end), and returns the resulting GPRs
    /// (RSP slot copied from the input), RFLAGS masked with <see cref="NativeState.FlagsMask"/>, and a
    /// copy of the scratch page. Thread-safe (serialised). The code must not fault: a fault kills the process.
    /// </summary>
    public static (NativeState state, byte[] scratch) Run(ReadOnlySpan<byte> code, NativeState input, ReadOnlySpan<byte> scratchIn)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.Gpr is null || input.Gpr.Length != 16) throw new ArgumentException("Gpr must have 16 entries", nameof(input));
        if (scratchIn.Length > ScratchSize) throw new ArgumentException("scratch input larger than the scratch page", nameof(scratchIn));

        NativeStateBlock block = default;
        for (int i = 0; i < 16; i++) block.Gpr[i] = input.Gpr[i];
        block.Rflags = input.Rflags & NativeState.FlagsMask;

        var scratchOut = new byte[ScratchSize];
        int total = Prologue.Length + code.Length + Epilogue.Length;

        lock (Gate)
        {
            if ((nuint)total > codeRegionSize)
            {
                nuint size = ((nuint)total + PageSize - 1) & ~(nuint)(PageSize - 1);
                nint fresh = Map(size, PROT_READ | PROT_EXEC);
                munmap(codeRegion, codeRegionSize);
                codeRegion = fresh;
                codeRegionSize = size;
            }
            nuint used = ((nuint)total + PageSize - 1) & ~(nuint)(PageSize - 1);

            Protect(codeRegion, used, PROT_READ | PROT_WRITE);
            var dst = new Span<byte>((void*)codeRegion, total);
            Prologue.CopyTo(dst);
            code.CopyTo(dst[Prologue.Length..]);
            Epilogue.CopyTo(dst[(Prologue.Length + code.Length)..]);
            Protect(codeRegion, used, PROT_READ | PROT_EXEC);

            var page = new Span<byte>((void*)Scratch, ScratchSize);
            page.Clear();
            scratchIn.CopyTo(page);

            ((delegate* unmanaged<NativeStateBlock*, void>)codeRegion)(&block);

            page.CopyTo(scratchOut);
        }

        var state = new NativeState { Rflags = block.Rflags & NativeState.FlagsMask };
        for (int i = 0; i < 16; i++) state.Gpr[i] = block.Gpr[i];
        state.Gpr[4] = input.Gpr[4];
        return (state, scratchOut);
    }
}
