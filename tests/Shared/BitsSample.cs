using System.Runtime.InteropServices;

namespace Harness.Tests.Shared;

/// <summary>
/// guest/samples/bits (gcc -march=x86-64-v3): its image, and the checksum the host CPU computes by
/// running the same source natively (guest/build/host/libbits.so). Linked into both test projects.
/// </summary>
public static class BitsSample
{
    public const ulong Rounds = 2000, Seed = 0x9E3779B97F4A7C15;

    public static string ImagePath => Path.Combine(HarnessCli.RepoRoot, "guest", "build", "samples", "bits.elf");
    public static string HostLibrary => Path.Combine(HarnessCli.RepoRoot, "guest", "build", "host", "libbits.so");

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate ulong BitsWork(ulong rounds, ulong seed);

    /// <summary>The host CPU's checksum of the sample's workload.</summary>
    public static ulong HostChecksum()
    {
        var lib = NativeLibrary.Load(HostLibrary);
        try { return Marshal.GetDelegateForFunctionPointer<BitsWork>(NativeLibrary.GetExport(lib, "bits_work"))(Rounds, Seed); }
        finally { NativeLibrary.Free(lib); }
    }

    /// <summary>The console transcript of a run with the given checksum.</summary>
    public static string Transcript(ulong checksum) => $"bits: checksum=0x{checksum:x16} rounds={Rounds}\n";
}
