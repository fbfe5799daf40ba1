using System.Text;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;

namespace Harness.Verification.Races;

/// <summary>One side of a race: which vCPU, at which instruction, what access, what value.</summary>
public sealed record RaceAccess(int Vcpu, ulong Rip, ulong NativeRip, ulong Va, int Size, AccessKind Kind, ulong Value);

/// <summary>Two accesses by different vCPUs to the same bytes, at least one a plain write, neither ordered before the other.</summary>
public sealed record DataRace(RaceAccess Earlier, RaceAccess Later)
{
    /// <summary>KCSAN's report: both accesses with symbols and native addresses, sizes, values and vCPUs.</summary>
    public string Report(Func<ulong, string>? symbolize = null)
    {
        string Where(RaceAccess a)
        {
            string sym = symbolize?.Invoke(a.NativeRip) ?? "";
            string at = sym.Length > 0 ? sym : $"0x{a.NativeRip:x}";
            return a.Rip != a.NativeRip ? $" {at} (native 0x{a.NativeRip:x}, code cache 0x{a.Rip:x})" : $" {at} (0x{a.Rip:x})";
        }
        string Fn(RaceAccess a) => symbolize?.Invoke(a.NativeRip) is { Length: > 0 } s ? s.Split('+')[0] : $"0x{a.NativeRip:x}";
        string Target(RaceAccess a) => symbolize?.Invoke(a.Va) is { Length: > 0 } s ? $"0x{a.Va:x} ({s})" : $"0x{a.Va:x}";
        string Kind(RaceAccess a) => a.Kind == AccessKind.Read ? "read" : a.Kind == AccessKind.Write ? "write" : "read-write (locked)";
        var sb = new StringBuilder();
        sb.AppendLine("==================================================================");
        sb.AppendLine($"BUG: KCSAN: data-race in {Fn(Later)} / {Fn(Earlier)}");
        sb.AppendLine();
        sb.AppendLine($"{Kind(Later)} to {Target(Later)} of {Later.Size} bytes by vCPU {Later.Vcpu}:");
        sb.AppendLine(Where(Later));
        sb.AppendLine();
        sb.AppendLine($"{Kind(Earlier)} to {Target(Earlier)} of {Earlier.Size} bytes by vCPU {Earlier.Vcpu}:");
        sb.AppendLine(Where(Earlier));
        sb.AppendLine();
        sb.AppendLine($"values: vCPU {Earlier.Vcpu} {(Earlier.Kind == AccessKind.Read ? "read" : "wrote")} 0x{Earlier.Value:x}, vCPU {Later.Vcpu} {(Later.Kind == AccessKind.Read ? "read" : "wrote")} 0x{Later.Value:x}");
        sb.Append("==================================================================");
        return sb.ToString();
    }
}

/// <summary>
/// A happens-before data-race detector over guest memory (vector clocks, FastTrack-style epochs
/// per 8-byte granule of physical memory), for the controlled executions, which run one vCPU at a
/// time. What orders two vCPUs' accesses:
/// <list type="bullet">
/// <item>locked instructions and xchg: an acquire and a release on their bytes; the bytes become a
///   synchronization variable, and later plain stores to them are releases and plain loads acquires
///   (x86 stores are releases and loads acquires: a spinlock's plain-store unlock and its test loop's
///   plain loads synchronize, as C11 atomics on the same object would);</item>
/// <item>an IPI: the sender's clock reaches the receiver when the interrupt is delivered; a start-up
///   IPI starts the AP with the sender's clock;</item>
/// <item>a vmcall a host agent handles: acquire and release of one host lock (the DBT's translator
///   lock, which its dispatcher holds).</item>
/// </list>
/// Fences order a vCPU's own accesses but synchronize with no one, so they add no edge. Host writes
/// (the DBT's code cache, its chaining patches and jumptable entries) are not guest accesses and are
/// never reported. Accesses to plain variables that nothing orders are races, whether or not the
/// run went wrong. Each pair of instructions is reported once.
/// </summary>
public sealed class RaceDetector : AccessObserver
{
    private readonly int n;
    private readonly uint[][] clocks;
    private readonly uint[][] ipiPending;
    private readonly uint[] host;
    private readonly Dictionary<ulong, uint[]> sync = [];
    private readonly Dictionary<ulong, Shadow> shadow = [];
    private readonly HashSet<(ulong, ulong)> reportedPairs = [];
    private readonly Func<RaceAccess, RaceAccess, bool>? intended;
    private readonly Machine machine;

    private sealed class Shadow
    {
        public RaceAccess? Write;
        public uint WriteEpoch;
        public byte WriteMask;
        public readonly (uint Epoch, byte Mask, RaceAccess? Access)[] Reads;
        public Shadow(int n) => Reads = new (uint, byte, RaceAccess?)[n];
    }

    /// <summary>Attaches a detector to machine (before it runs). intended: races to leave out (both accesses), e.g. the kernel's annotated ones.</summary>
    public RaceDetector(Machine machine, Func<RaceAccess, RaceAccess, bool>? intended = null)
    {
        if (!Seams.Points) throw new InvalidOperationException($"the race detector observes accesses at the scheduling points: set the AppContext switch {Seams.PointsSwitch} before any machine type is used");
        this.machine = machine;
        this.intended = intended;
        n = machine.Vcpus.Length;
        clocks = new uint[n][];
        ipiPending = new uint[n][];
        for (int i = 0; i < n; i++)
        {
            clocks[i] = new uint[n];
            clocks[i][i] = 1;
            ipiPending[i] = new uint[n];
        }
        host = new uint[n];
        machine.Observer = this;
    }

    /// <summary>Races found so far (intended ones left out), in the order found.</summary>
    public List<DataRace> Races { get; } = [];

    /// <summary>Races the intended filter left out.</summary>
    public long IntendedSeen { get; private set; }

    /// <summary>Plain accesses checked, and accesses to synchronization variables.</summary>
    public long Checked { get; private set; }
    public long Synchronizing { get; private set; }

    public override void Access(Vcpu v, ulong va, int size, AccessKind kind, ulong value)
    {
        int t = v.Index;
        ulong pa;
        try { pa = v.ToPhysical(va, Harness.Smp.Access.Read); }
        catch (GuestFault) { return; } // a page-crossing access's second page: not worth a walk with side effects
        if (!machine.Memory.InRam(pa, (ulong)size)) return;
        ulong rip = v.CurrentRip;
        var access = new RaceAccess(t, rip, machine.OriginOf(rip)?.NativeRip ?? rip, va, size, kind, value);
        // One physical granule at a time (an access crossing an 8-byte boundary touches two).
        for (ulong a = pa, end = pa + (ulong)size; a < end;)
        {
            ulong g = a & ~7UL;
            ulong stop = Math.Min(end, g + 8);
            byte mask = (byte)(((1 << (int)(stop - a)) - 1) << (int)(a - g));
            Granule(t, g, mask, kind, access);
            a = stop;
        }
    }

    private void Granule(int t, ulong g, byte mask, AccessKind kind, RaceAccess access)
    {
        var c = clocks[t];
        if (kind == AccessKind.Atomic || sync.ContainsKey(g))
        {
            Synchronizing++;
            if (!sync.TryGetValue(g, out var s)) sync[g] = s = new uint[n];
            // Acquire what the last releaser published, then publish this vCPU's clock.
            if (kind != AccessKind.Write) Join(c, s);
            if (kind != AccessKind.Read)
            {
                Array.Copy(c, s, n);
                c[t]++;
            }
            return;
        }
        Checked++;
        if (!shadow.TryGetValue(g, out var sh)) shadow[g] = sh = new Shadow(n);
        if (sh.Write is { } w && w.Vcpu != t && (sh.WriteMask & mask) != 0 && sh.WriteEpoch > c[w.Vcpu])
            Found(w, access);
        if (kind == AccessKind.Write)
        {
            for (int u = 0; u < n; u++)
            {
                var (epoch, rmask, r) = sh.Reads[u];
                if (u != t && r is not null && (rmask & mask) != 0 && epoch > c[u]) Found(r, access);
            }
            sh.Write = access;
            sh.WriteEpoch = c[t];
            sh.WriteMask = mask;
            Array.Clear(sh.Reads);
        }
        else
        {
            var (epoch, rmask, _) = sh.Reads[t];
            sh.Reads[t] = (c[t], epoch == c[t] ? (byte)(rmask | mask) : mask, access);
        }
    }

    private void Found(RaceAccess earlier, RaceAccess later)
    {
        if (!reportedPairs.Add((Math.Min(earlier.NativeRip, later.NativeRip), Math.Max(earlier.NativeRip, later.NativeRip)))) return;
        if (intended is not null && intended(earlier, later)) { IntendedSeen++; return; }
        Races.Add(new DataRace(earlier, later));
    }

    private static void Join(uint[] into, uint[] from)
    {
        for (int i = 0; i < into.Length; i++) if (from[i] > into[i]) into[i] = from[i];
    }

    /// <summary>The failure text of an execution with races: how many distinct pairs, then each report (at most `most`).</summary>
    public static string Summary(IReadOnlyList<DataRace> races, Func<ulong, string>? symbolize, int most = 12)
    {
        var sb = new StringBuilder($"data race: {races.Count} distinct pair{(races.Count == 1 ? "" : "s")} of instructions this execution\n");
        foreach (var r in races.Take(most)) sb.AppendLine(r.Report(symbolize));
        if (races.Count > most) sb.AppendLine($"... and {races.Count - most} more");
        return sb.ToString().TrimEnd();
    }

    public override void IpiSent(Vcpu from, int to, int vector)
    {
        Join(ipiPending[to], clocks[from.Index]);
        clocks[from.Index][from.Index]++;
    }

    public override void InterruptDelivered(Vcpu v, int vector) => Join(clocks[v.Index], ipiPending[v.Index]);

    public override void ApStarted(Vcpu from, Vcpu ap)
    {
        Join(clocks[ap.Index], clocks[from.Index]);
        clocks[from.Index][from.Index]++;
    }

    public override void HostCall(Vcpu v)
    {
        var c = clocks[v.Index];
        Join(c, host);
        Array.Copy(c, host, n);
        c[v.Index]++;
    }
}
