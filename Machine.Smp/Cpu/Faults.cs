namespace Harness.Smp.Cpu;

public static class Vectors
{
    public const int DE = 0, DB = 1, NMI = 2, BP = 3, OF = 4, BR = 5, UD = 6, NM = 7, DF = 8;
    public const int TS = 10, NP = 11, SS = 12, GP = 13, PF = 14, MF = 16, AC = 17, CP = 21, VC = 29, SX = 30;

    public static string Name(int v) => v switch
    {
        DE => "#DE", DB => "#DB", NMI => "NMI", BP => "#BP", OF => "#OF", BR => "#BR", UD => "#UD", NM => "#NM",
        DF => "#DF", TS => "#TS", NP => "#NP", SS => "#SS", GP => "#GP", PF => "#PF", MF => "#MF", AC => "#AC",
        CP => "#CP", VC => "#VC", SX => "#SX",
        _ => $"vector {v}",
    };

    /// <summary>The exceptions whose delivery pushes an error code (SDM vol. 3, table 6-1; the machine raises none of #CP, #VC, #SX, but a DBT shadowing their gates must know their frames).</summary>
    public static bool HasErrorCode(int v) => v is DF or TS or NP or SS or GP or PF or AC or CP or VC or SX;
    public static bool IsContributory(int v) => v is DE or TS or NP or SS or GP;
}

/// <summary>An architectural exception raised by an instruction; delivered to the guest through its IDT.</summary>
public sealed class GuestFault(int vector, uint errorCode = 0, ulong cr2 = 0) : Exception(Vectors.Name(vector))
{
    public int Vector { get; } = vector;
    public uint ErrorCode { get; } = errorCode;
    public ulong Cr2 { get; } = cr2;

    public static GuestFault Gp(uint code = 0) => new(Vectors.GP, code);
    public static GuestFault Ud() => new(Vectors.UD);

    public override string ToString() => Vector == Vectors.PF
        ? $"#PF(cr2=0x{Cr2:x}, err=0x{ErrorCode:x})"
        : Vectors.HasErrorCode(Vector) ? $"{Vectors.Name(Vector)}(0x{ErrorCode:x})" : Vectors.Name(Vector);
}

/// <summary>Why a machine stopped.</summary>
public enum StopReason
{
    None,
    Exited,             // the guest wrote its exit status to port 0xF4
    TripleFault,
    Unsupported,        // a valid instruction the machine does not implement
    InstructionLimit,
    Deadlock,           // every vCPU halted with nothing that could wake it
    Interrupted,        // the host asked it to stop (Ctrl-C)
    HostError,          // an exception escaped a vCPU thread: a harness bug, reported, never swallowed
}

/// <summary>Thrown on a vCPU thread to stop the whole machine (not an architectural event).</summary>
public sealed class MachineStop(StopReason reason, string message) : Exception(message)
{
    public StopReason Reason { get; } = reason;
}
