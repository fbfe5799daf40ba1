using Harness.Smp;
using Harness.Smp.Boot;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Verification.Guests;

/// <summary>
/// A ring-0 guest for the DBT's chaining patch, in the -2 GiB kernel alias like a kernel. Every
/// vCPU runs the same loop through the same translated blocks, so the first vCPU to take each
/// direct branch patches it while the others may be about to execute it:
/// <code>
/// worker: mov ecx, Iterations
/// loop:   inc qword [r15]          ; this vCPU's iteration count
///         call f                   ; a direct call (an edge, chained on first use)
///         dec ecx
///         jnz loop                 ; a direct jcc (an edge, chained on first use)
///         ret
/// f:      add qword [r15+8], 2     ; this vCPU's call count, twice
///         ret
/// </code>
/// A vCPU that runs a half-written patch branches into the middle of the edge pool or the main
/// pool: the counts come out wrong, or the machine stops. No interrupts: the interleavings that
/// matter are between one vCPU's patch and another's execution of the patched block.
/// </summary>
public sealed class ChainingPatchGuest
{
    public const ulong PerCpuBase = RingZeroGuest.KernelData + RingZeroGuest.DoneFlagsBytes, PerCpuStride = 0x100;
    public const int OffIterations = 0x00, OffCalls = 0x08;

    public int Vcpus { get; }
    public int Iterations { get; }

    private readonly RingZeroGuest image = new(inKernelAlias: true);

    public ChainingPatchGuest(int vcpus = 2, int iterations = 20)
    {
        if (vcpus is < 2 or > 4) throw new ArgumentOutOfRangeException(nameof(vcpus), "a patch race needs 2 to 4 vCPUs");
        if (iterations < 1) throw new ArgumentOutOfRangeException(nameof(iterations));
        Vcpus = vcpus;
        Iterations = iterations;
        var a = image.A;
        var worker = a.CreateLabel("worker");
        var loop = a.CreateLabel("loop");
        var f = a.CreateLabel("f");
        image.EveryVcpuCalls(worker, vcpus, PerCpu);
        a.Label(ref worker);
        a.mov(ecx, iterations);
        a.Label(ref loop);
        a.inc(__qword_ptr[r15 + OffIterations]);
        a.call(f);
        a.dec(ecx);
        a.jnz(loop);
        a.ret();
        a.Label(ref f);
        a.add(__qword_ptr[r15 + OffCalls], 2);
        a.ret();
        image.Assemble();
    }

    public static ulong PerCpu(int cpu) => PerCpuBase + (ulong)cpu * PerCpuStride;

    public void Load(Machine m) => image.Load(m);
}
