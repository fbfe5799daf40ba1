using System.Runtime.InteropServices;

namespace Harness.Smp.Cpu;

/// <summary>
/// The architectural state of one vCPU: one flat, pinned struct in native memory. Its field
/// offsets are part of the machine's contract (tests pin them) so that code which reads state by
/// offset keeps working when fields are added at the end.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 8)]
public unsafe struct CpuState
{
    public fixed ulong Gpr[16];     // rax rcx rdx rbx rsp rbp rsi rdi r8..r15 (encoding order)
    public ulong Rip;
    /// <summary>Non-arithmetic bits always; arithmetic bits only when LazyOp == None.</summary>
    public ulong RflagsRaw;

    // Lazy arithmetic flags: the last flag-setting operation, evaluated on demand.
    public ulong LazyRes, LazySrc1, LazySrc2, LazyCfIn;
    public int LazyOp;              // FlagOp
    public int LazySize;            // operand size log2 (0..3)

    public ulong Cr0, Cr2, Cr3, Cr4, Efer;
    public ulong FsBase, GsBase, KernelGsBase;
    public ulong Star, Lstar, Cstar, Fmask, TscAux;
    public ulong GdtBase, IdtBase, TrBase;
    public uint GdtLimit, IdtLimit, TrLimit;
    public ushort Cs, Ss, Ds, Es, Fs, Gs, Tr, Ldtr;
    public int Cpl;
    public int Halted;
    /// <summary>Guest time: instructions retired by this vCPU (plus time skipped while halted).</summary>
    public long Retired;
    /// <summary>Interrupts are not taken before Retired reaches this (sti / mov ss shadow).</summary>
    public long ShadowUntil;
}

public static class Reg
{
    public const int Rax = 0, Rcx = 1, Rdx = 2, Rbx = 3, Rsp = 4, Rbp = 5, Rsi = 6, Rdi = 7;
    public const int R8 = 8, R9 = 9, R10 = 10, R11 = 11, R12 = 12, R13 = 13, R14 = 14, R15 = 15;
    public const byte None = 0xFF;
    /// <summary>8-bit high registers AH, CH, DH, BH are encoded as 16 + (0..3).</summary>
    public const int HighByteBase = 16;

    public static readonly string[] Names64 =
        ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
}

public static class Rflags
{
    public const ulong CF = 1 << 0, Fixed1 = 1 << 1, PF = 1 << 2, AF = 1 << 4, ZF = 1 << 6, SF = 1 << 7;
    public const ulong TF = 1 << 8, IF = 1 << 9, DF = 1 << 10, OF = 1 << 11;
    public const ulong IOPL = 3 << 12, NT = 1 << 14, RF = 1 << 16, VM = 1 << 17, AC = 1 << 18;
    public const ulong VIF = 1 << 19, VIP = 1 << 20, ID = 1 << 21;
    public const ulong Arith = CF | PF | AF | ZF | SF | OF;
    /// <summary>Bits a 64-bit popfq/iretq may change at all (VM/VIF/VIP are forced clear in long mode).</summary>
    public const ulong Writable = Arith | TF | IF | DF | IOPL | NT | RF | AC | ID;
}

public static class Cr0Bits
{
    public const ulong PE = 1, MP = 2, EM = 4, TS = 8, ET = 16, NE = 32, WP = 1 << 16, AM = 1 << 18, PG = 1UL << 31;
}

/// <summary>CR4 bits the machine reads (TSD: rdtsc faults outside ring 0).</summary>
public static class Cr4Bits
{
    public const ulong TSD = 1 << 2, PAE = 1 << 5;
}

public static class EferBits
{
    public const ulong SCE = 1, LME = 1 << 8, LMA = 1 << 10, NXE = 1 << 11;
}
