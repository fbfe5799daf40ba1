using System.Runtime.InteropServices;
using Harness.Smp;

namespace Harness.Samples;

/// <summary>
/// The host's side of params.h (next to this file): where the compute guest's parameter block is,
/// how a host patches it after loading the image and reads the checksums back, and the host-native
/// twin of work() in guest/build/host/libwork.so. Linked into the projects that run the guest (the
/// CLI's `bench compute`, the benchmarks, the machine's tests), so the layout is written once.
/// </summary>
internal static unsafe class ComputeParams
{
    public const ulong Phys = 0x100000;
    public const ulong Magic = 0x31455455504D4F43; // "COMPUTE1"
    public const ulong DefaultSeed = 0x0123456789ABCDEF;

    public static string ImagePath(string repoRoot) => Path.Combine(repoRoot, "guest", "build", "samples", "compute.elf");
    public static string NativeLibraryPath(string repoRoot) => Path.Combine(repoRoot, "guest", "build", "host", "libwork.so");

    /// <summary>Sets the rounds, the seed (vCPU n uses seed + n) and how many vCPUs work (0: all) in a loaded image.</summary>
    public static void Patch(Machine m, ulong iterations, ulong seed = DefaultSeed, int workCpus = 0)
    {
        if (m.Memory.ReadU64(Phys) != Magic)
            throw new InvalidOperationException($"no compute parameter block at physical 0x{Phys:x} (is the image guest/samples/compute?)");
        m.Memory.WriteU64(Phys + 8, iterations);
        m.Memory.WriteU64(Phys + 16, seed);
        m.Memory.WriteU64(Phys + 24, (ulong)workCpus);
    }

    /// <summary>The checksum vCPU n left (valid once the guest exited).</summary>
    public static ulong Checksum(Machine m, int vcpu) => m.Memory.ReadU64(Phys + 64 + 8 * (ulong)vcpu);

    /// <summary>work(iterations, seed) from libwork.so (gcc -O2, the guest's own source compiled for the host).</summary>
    public static delegate* unmanaged<ulong, ulong, ulong> LoadNative(string libraryPath)
    {
        if (!File.Exists(libraryPath)) throw new FileNotFoundException($"{libraryPath} not built: run guest/build.sh", libraryPath);
        return (delegate* unmanaged<ulong, ulong, ulong>)NativeLibrary.GetExport(NativeLibrary.Load(libraryPath), "work");
    }
}
