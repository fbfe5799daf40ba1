using System.Diagnostics;

using Harness.Smp.Decode;

namespace Harness.Smp.Compile;

/// <summary>When the machine compiles decoded blocks to host code (<see cref="MachineOptions.Compile"/>).</summary>
public enum BlockCompilation
{
    /// <summary>Every block is interpreted.</summary>
    Off,
    /// <summary>A block is compiled once it has run <see cref="BlockCompiler.HotThreshold"/> times (the default).</summary>
    Hot,
    /// <summary>Every block is compiled before its first run (tests of the compiler).</summary>
    Always,
}

/// <summary>
/// Compiles hot decoded blocks into host code through <see cref="BlockEmitter"/>. Only when the
/// scheduling points are off: a compiled block has none, so Coyote-controlled and TSO runs are
/// always interpreted. The counters are process-wide and exact (compile time is host time).
/// </summary>
public static class BlockCompiler
{
    /// <summary>
    /// Interpreted runs before a block is compiled. Compiling costs about as much as interpreting
    /// the block a few thousand times, so only blocks that keep running repay it.
    /// </summary>
    public static int HotThreshold { get; } =
        int.TryParse(Environment.GetEnvironmentVariable("HARNESS_COMPILE_THRESHOLD"), out int n) && n > 0 ? n : 256;

    private static long regions, instructions, fallbacks, ticks;

    /// <summary>Regions compiled (a page's hot blocks; a page is compiled again when more of it gets hot).</summary>
    public static long RegionsCompiled => Interlocked.Read(ref regions);
    /// <summary>Instructions in compiled blocks, and those of them run through their interpreter handler.</summary>
    public static long InstructionsCompiled => Interlocked.Read(ref instructions);
    public static long InstructionsFallingBack => Interlocked.Read(ref fallbacks);
    public static TimeSpan CompileTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref ticks));

    /// <summary>The environment's override of the default mode (HARNESS_COMPILE=off|hot|always), for experiments and CI.</summary>
    public static BlockCompilation Default { get; } =
        Environment.GetEnvironmentVariable("HARNESS_COMPILE")?.ToLowerInvariant() switch
        {
            "off" or "0" => BlockCompilation.Off,
            "always" => BlockCompilation.Always,
            _ => BlockCompilation.Hot,
        };

    /// <summary>
    /// Compiles the block's region now, on the caller's thread (Always: tests see every block
    /// compiled from its first run on), the runtime's JIT included.
    /// </summary>
    internal static CompiledBlock? Compile(Block block, int threshold, CompilerPlant plant)
    {
        CompilePage(block.Page, block.Insns[0].Ip >> 12, threshold, plant);
        return block.Code;
    }

    /// <summary>
    /// Asks for the hot blocks of the block's page to be compiled on the compiler thread; the block
    /// stays interpreted until its entry is published in <see cref="Block.Code"/>. Compiling costs
    /// about as much as interpreting the code a few thousand times: on its own thread that time
    /// overlaps the guest's instead of adding to it.
    /// </summary>
    internal static void Request(Block block, int threshold, CompilerPlant plant)
    {
        var page = block.Page;
        // Compiled before in this process (another machine with the same code): bind it now, here.
        if (TryBindCached(block, plant)) return;
        // Read before the exchange: vCPUs running the page's blocks meanwhile only share the line.
        if (Volatile.Read(ref page.CompileRequested) != 0 || Interlocked.Exchange(ref page.CompileRequested, 1) != 0) return;
        lock (queue) // never taken with the scheduling points on: compiling is off then
        {
            queue.Enqueue((page, block.Insns[0].Ip >> 12, threshold, plant));
            if (worker is null)
            {
                worker = new Thread(Work) { IsBackground = true, Name = "block compiler" };
                worker.Start();
            }
            Monitor.Pulse(queue);
        }
    }

    private static readonly Queue<(CodePage Page, ulong VirtualPage, int Threshold, CompilerPlant Plant)> queue = new();
    private static Thread? worker;

    private static void Work()
    {
        while (true)
        {
            (CodePage Page, ulong VirtualPage, int Threshold, CompilerPlant Plant) job;
            lock (queue)
            {
                while (queue.Count == 0) Monitor.Wait(queue);
                job = queue.Dequeue();
            }
            // Hot blocks that appear from here on ask again (and get a region with everything hot by then).
            Volatile.Write(ref job.Page.CompileRequested, 0);
            CompilePage(job.Page, job.VirtualPage, job.Threshold, job.Plant);
        }
    }

    /// <summary>
    /// One region for the page's hot blocks decoded at this virtual page (the hottest, up to
    /// <see cref="BlockEmitter.MaxRegionInstructions"/>), each block's entry published as it is done.
    /// A compiler bug is kept on the blocks: the vCPU that runs one next stops the machine with it.
    /// </summary>
    private static void CompilePage(CodePage page, ulong virtualPage, int threshold, CompilerPlant plant)
    {
        // Blocks already compiled stay in their region (an edge there goes through the loop); warm
        // ones join the hot ones, so a loop whose blocks get hot one after another compiles as one.
        // A block that runs into the next page stays interpreted (the region checks one page).
        var candidates = page.Published()
            .Where(b => b.Valid && b.Code is null && b.Page2 is null && b.Insns[0].Ip >> 12 == virtualPage && b.Heat >= Math.Max(1, threshold / 4))
            .OrderByDescending(b => b.Heat).ToList();
        var blocks = candidates.TakeWhile(SizeAllows(BlockEmitter.MaxRegionInstructions)).OrderBy(b => b.Insns[0].Ip).ToList();
        if (blocks.Count == 0) return;
        // Hot blocks left over by the size limit ask no more (their heat stops at the threshold): the next region takes them.
        if (candidates.Skip(blocks.Count).FirstOrDefault(b => b.Heat >= threshold) is { } left && worker is not null) Request(left, threshold, plant);
        try
        {
            var key = new CodeKey(blocks, plant);
            if (Cached(key) is { } method)
            {
                // The same blocks at the same addresses compiled before (another machine of this
                // process: a test's or a benchmark's next run): bind that code to these blocks.
                var (r, e) = BlockEmitter.Bind(method, blocks.ToArray());
                Interlocked.Increment(ref reused);
                Publish(r, e);
                return;
            }
            long t0 = Stopwatch.GetTimestamp();
            var emitter = new BlockEmitter(blocks, plant);
            var (region, entries) = emitter.Finish();
            Interlocked.Add(ref ticks, Stopwatch.GetTimestamp() - t0);
            Interlocked.Increment(ref regions);
            Interlocked.Add(ref instructions, emitter.Instructions);
            Interlocked.Add(ref fallbacks, emitter.Fallbacks);
            Jit(entries[0]);
            Remember(key, emitter.Method!, blocks);
            Publish(region, entries);
        }
        catch (Exception e)
        {
            foreach (var b in blocks) Volatile.Write(ref b.CompileError, e);
        }
    }

    // ---- the code cache: compiled regions by what they were compiled from ---------------------------

    private const int CacheLimit = 4096;
    private static readonly Dictionary<CodeKey, System.Reflection.Emit.DynamicMethod> cache = [];
    private static long reused;

    /// <summary>Regions whose code came from the code cache (compiled earlier for the same blocks in another machine).</summary>
    public static long RegionsReused => Interlocked.Read(ref reused);

    private static System.Reflection.Emit.DynamicMethod? Cached(CodeKey key)
    {
        lock (cache) return cache.GetValueOrDefault(key);
    }

    // Which blocks (by address) each compiled region of a virtual page held: a machine whose block
    // gets hot there looks for the same blocks in its own page, and if they decode the same (the
    // key), binds the cached code at once, whatever the other blocks' heat is at that moment.
    private static readonly Dictionary<ulong, List<ulong[]>> layouts = [];

    private static void Remember(CodeKey key, System.Reflection.Emit.DynamicMethod method, List<Block> blocks)
    {
        lock (cache)
        {
            if (cache.Count >= CacheLimit) { cache.Clear(); layouts.Clear(); } // a long-lived process that saw many kernels: start over
            cache[key] = method;
            ulong vpage = blocks[0].Insns[0].Ip >> 12;
            if (!layouts.TryGetValue(vpage, out var list)) layouts[vpage] = list = [];
            if (list.Count < 8) list.Add(blocks.Select(b => b.Insns[0].Ip).ToArray());
        }
    }

    /// <summary>
    /// Runs after which a block looks for code this process compiled before for the same blocks
    /// (binding it costs microseconds, so it need not wait for the compile threshold).
    /// </summary>
    public const int EarlyBind = 16;

    /// <summary>The block's code from the code cache, bound now; null when there is none (yet).</summary>
    internal static CompiledBlock? BindCached(Block block, CompilerPlant plant) => TryBindCached(block, plant) ? block.Code : null;

    /// <summary>Binds a cached region that holds the block and whose blocks this machine has decoded the same; false if none.</summary>
    private static bool TryBindCached(Block block, CompilerPlant plant)
    {
        ulong ip = block.Insns[0].Ip, vpage = ip >> 12;
        ulong[][] candidates;
        lock (cache)
        {
            if (!layouts.TryGetValue(vpage, out var list)) return false;
            candidates = list.Where(l => Array.IndexOf(l, ip) >= 0).ToArray();
        }
        foreach (var ips in candidates)
        {
            var blocks = new List<Block>(ips.Length);
            foreach (ulong at in ips)
            {
                var b = block.Page.BlockAt((int)(at & 0xFFF));
                if (b is null || b.Insns[0].Ip != at || !b.Valid || b.Code is not null || b.Page2 is not null) break;
                blocks.Add(b);
            }
            if (blocks.Count != ips.Length || Cached(new CodeKey(blocks, plant)) is not { } method) continue;
            var (r, e) = BlockEmitter.Bind(method, blocks.ToArray());
            Interlocked.Increment(ref reused);
            Publish(r, e);
            return block.Code is not null;
        }
        return false;
    }

    /// <summary>
    /// What a region's code depends on: its blocks' decoded instructions (addresses, operands and
    /// handlers included), in region order, and the planted bug. The code reads nothing else that
    /// differs between machines from constants (Region.Starts).
    /// </summary>
    private readonly unsafe struct CodeKey : IEquatable<CodeKey>
    {
        private readonly byte[] bytes;
        private readonly int hash;

        public CodeKey(List<Block> blocks, CompilerPlant plant)
        {
            int size = blocks.Sum(b => b.Count * sizeof(Insn) + sizeof(int)) + sizeof(int);
            bytes = new byte[size];
            var span = bytes.AsSpan();
            int at = 0;
            BitConverter.TryWriteBytes(span[at..], (int)plant); at += sizeof(int);
            foreach (var b in blocks)
            {
                BitConverter.TryWriteBytes(span[at..], b.Count); at += sizeof(int);
                var insns = new ReadOnlySpan<byte>(b.Ptr, b.Count * sizeof(Insn));
                insns.CopyTo(span[at..]); at += insns.Length;
            }
            var h = new HashCode();
            h.AddBytes(bytes);
            hash = h.ToHashCode();
        }

        public bool Equals(CodeKey other) => hash == other.hash && bytes.AsSpan().SequenceEqual(other.bytes);
        public override bool Equals(object? obj) => obj is CodeKey k && Equals(k);
        public override int GetHashCode() => hash;
    }

    /// <summary>
    /// Makes the region's entries the blocks' code. A block retired meanwhile kills the region: its
    /// retirer either sees the block's region (and marks it dead) or we see the block dead here.
    /// </summary>
    private static void Publish(Region region, CompiledBlock[] entries)
    {
        foreach (var b in region.Blocks) b.Region = region;
        Interlocked.MemoryBarrier();
        if (region.Blocks.Any(b => b.Dead)) region.Dead = true;
        for (int k = 0; k < entries.Length; k++) Volatile.Write(ref region.Blocks[k].Code, entries[k]);
    }

    /// <summary>Takes blocks while their instructions add up to at most max (at least one block).</summary>
    private static Func<Block, bool> SizeAllows(int max)
    {
        int sum = 0;
        return b => (sum += b.Count) <= max || sum == b.Count;
    }

    private static long jitTicks;
    /// <summary>Host time the runtime took to compile the regions' IL to machine code.</summary>
    public static TimeSpan JitTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref jitTicks));

    /// <summary>The runtime compiles a DynamicMethod at its first call: a dry call (no vCPU) returns at once.</summary>
    private static unsafe void Jit(CompiledBlock code)
    {
        long t0 = Stopwatch.GetTimestamp();
        code(null!, null);
        Interlocked.Add(ref jitTicks, Stopwatch.GetTimestamp() - t0);
    }
}
