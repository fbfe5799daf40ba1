using Harness.Samples;
using Harness.Smp;
using Harness.Smp.Compile;
using Harness.Smp.Control;

namespace Harness.Benchmarks;

/// <summary>
/// The compute guest (guest/samples/compute) and its host-native twin (guest/build/host/libwork.so).
/// The guest's parameter block sits at physical 0x100000 (params.h): the benchmarks patch the
/// iteration count and seed there after loading the image, and read each vCPU's checksum back.
/// </summary>
public static unsafe class ComputeGuest
{
    public const ulong Seed = ComputeParams.DefaultSeed;
    public const int DefaultIterations = 800;
    public const int QuickIterations = 40;

    /// <summary>Environment variables shared by the BenchmarkDotNet host and its child processes.</summary>
    public const string IterationsVar = "HARNESS_BENCH_ITERATIONS", OutVar = "HARNESS_BENCH_OUT", RootVar = "HARNESS_ROOT";

    /// <summary>Rounds of work() per vCPU: $HARNESS_BENCH_ITERATIONS (set by --quick), else 800 (~74 M guest instructions).</summary>
    public static ulong Iterations =>
        ulong.TryParse(Environment.GetEnvironmentVariable(IterationsVar), out var n) && n > 0 ? n : DefaultIterations;

    public static string RepoRoot { get; } = FindRoot();

    public static string ImagePath => ComputeParams.ImagePath(RepoRoot);
    public static string NativeLibraryPath => ComputeParams.NativeLibraryPath(RepoRoot);

    private static string FindRoot()
    {
        if (Environment.GetEnvironmentVariable(RootVar) is { Length: > 0 } r && File.Exists(Path.Combine(r, "Harness.sln"))) return r;
        // BenchmarkDotNet runs the benchmarks from a generated project under benchmarks/bin/: walk up.
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Harness.sln"))) return d.FullName;
        throw new InvalidOperationException($"cannot find the repository root (Harness.sln); set {RootVar}");
    }

    private static delegate* unmanaged<ulong, ulong, ulong> native;

    /// <summary>work(iterations, seed) from libwork.so (gcc -O2 -fPIC -mgeneral-regs-only, same source as the guest's).</summary>
    public static ulong NativeWork(ulong iterations, ulong seed)
    {
        if (native == null) native = ComputeParams.LoadNative(NativeLibraryPath);
        return native(iterations, seed);
    }

    /// <summary>A machine with the compute image loaded and its parameters patched; not yet run.</summary>
    public static Machine Create(int vcpus, ulong iterations, int workCpus = 0, BlockCompilation compile = BlockCompilation.Hot)
    {
        if (!File.Exists(ImagePath)) throw new FileNotFoundException($"{ImagePath} not built: run guest/build.sh (or benchmarks/run.sh)");
        var m = new Machine(new MachineOptions { Vcpus = vcpus, MemoryBytes = 64UL << 20, Control = new FreeRunning(), Compile = compile });
        m.LoadElf(ImagePath);
        ComputeParams.Patch(m, iterations, Seed, workCpus);
        return m;
    }

    /// <summary>Runs the machine to the guest's exit and checks every working vCPU's checksum against the native result.</summary>
    public static RunResult RunChecked(Machine m, ulong[] expected)
    {
        var r = m.Run();
        if (!r.Exited || r.ExitStatus != 0) throw new InvalidOperationException($"compute guest did not exit cleanly: {r.Reason}: {r.Message}");
        for (int i = 0; i < expected.Length; i++)
        {
            ulong got = ComputeParams.Checksum(m, i);
            if (got != expected[i]) throw new InvalidOperationException($"vCPU {i}: guest checksum 0x{got:x16} != native 0x{expected[i]:x16}");
        }
        return r;
    }

    /// <summary>The native checksums the guest's vCPUs must reproduce (vCPU n uses seed + n).</summary>
    public static ulong[] Expected(int workCpus, ulong iterations) =>
        Enumerable.Range(0, workCpus).Select(i => NativeWork(iterations, Seed + (ulong)i)).ToArray();

    /// <summary>Child-process facts the host-side columns read back (BenchmarkDotNet runs each benchmark in its own process).</summary>
    public static void Record(string key, string value)
    {
        if (Environment.GetEnvironmentVariable(OutVar) is not { Length: > 0 } dir) return;
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, key + ".txt"), value);
    }

    public static string? Recorded(string key)
    {
        if (Environment.GetEnvironmentVariable(OutVar) is not { Length: > 0 } dir) return null;
        var f = Path.Combine(dir, key + ".txt");
        return File.Exists(f) ? File.ReadAllText(f).Trim() : null;
    }
}
