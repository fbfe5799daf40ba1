using System.Text;
using Harness.Smp;
using Harness.Smp.Control;

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
/// A happens-before data-race detector over guest memory (vector clocks, FastTrack-style epochs per
/// byte of physical memory), for the controlled executions, which run one vCPU at a time. What
/// orders two vCPUs' accesses:
/// <list type="bullet">
/// <item>locked instructions and xchg: an acquire and a release on their bytes; those bytes become a
///   synchronization variable, and later plain stores to them are releases and plain loads acquires
///   (x86 stores are releases and loads acquires: a spinlock's plain-store unlock and its test loop's
///   plain loads synchronize, as C11 atomics on the same object would). The unit is the 8-byte
///   granule: x86 compiles C11 release stores and acquire loads to plain moves, so the machine
///   cannot tell an atomic field from a plain one, and the fields next to a locked word are most
///   often its companion atomics (a thread's on_cpu next to its cmpxchg'd state). The price: a plain
///   field in the same granule as a lock word (a spinlock's owner_cpu) is not checked;</item>
/// <item>an IPI: the sender's clock reaches the receiver when that vector is delivered to it; a
///   start-up IPI starts the AP with the sender's clock;</item>
/// <item>a vmcall a host agent handles: acquire and release of one host lock (the DBT's translator
///   lock, which its dispatcher holds).</item>
/// </list>
/// Fences order a vCPU's own accesses but synchronize with no one, so they add no edge. Host writes
/// (the DBT's code cache, its chaining patches and jumptable entries) are not guest accesses and are
/// never reported. Accesses to plain variables that nothing orders are races, whether or not the
/// run went wrong; a locked access is checked against the plain writes before it too (not the plain
/// reads: an acquire load of a flag before its first locked update looks plain). Each pair of
/// instructions is reported once.
/// Under TSO a release is published when its store executes, not when it drains: a reader that
/// still reads the old value also acquires, so some races are missed there (never invented).
/// </summary>
public sealed class RaceDetector : AccessObserver
{
    private readonly int n;
    private readonly uint[][] clocks;
    private readonly Dictionary<int, uint[]>[] ipiPending;
    private readonly uint[] host;
    private readonly Dictionary<ulong, SyncVar> sync = [];
    private readonly Dictionary<ulong, ByteShadow> shadow = [];
    private readonly HashSet<(ulong, ulong)> reportedPairs = [];
    private readonly Func<RaceAccess, RaceAccess, bool>? intended;
    private readonly Machine machine;

    /// <summary>An 8-byte granule a locked instruction has used: its last release.</summary>
    private sealed class SyncVar(int n)
    {
        public readonly uint[] Clock = new uint[n];
    }

    private sealed class ByteShadow(int n)
    {
        public RaceAccess? Write;
        public uint WriteEpoch;
        public readonly (uint Epoch, RaceAccess? Access)[] Reads = new (uint, RaceAccess?)[n];
    }

    /// <summary>Attaches a detector to machine (before it runs). intended: races to leave out (both accesses), e.g. the kernel's annotated ones.</summary>
    public RaceDetector(Machine machine, Func<RaceAccess, RaceAccess, bool>? intended = null)
    {
        if (!Seams.Points) throw new InvalidOperationException($"the race detector observes accesses at the scheduling points: set the AppContext switch {Seams.PointsSwitch} before any machine type is used");
        this.machine = machine;
        this.intended = intended;
        n = machine.Vcpus.Length;
        clocks = new uint[n][];
        ipiPending = new Dictionary<int, uint[]>[n];
        for (int i = 0; i < n; i++)
        {
            clocks[i] = new uint[n];
            clocks[i][i] = 1;
            ipiPending[i] = [];
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
        ulong rip = v.CurrentRip;
        var access = new RaceAccess(t, rip, machine.OriginOf(rip)?.NativeRip ?? rip, va, size, kind, value);
        // Page by page (the physical pages of an access that crosses one need not be adjacent),
        // through the TLB entries the access itself used: no walk, no side effect on the machine.
        for (ulong a = va, end = va + (ulong)size; a < end;)
        {
            ulong pageEnd = Math.Min(end, (a | 0xFFF) + 1);
            if (v.TryCachedPhysical(a, out ulong pa))
                for (ulong p = pa, pEnd = pa + (pageEnd - a); p < pEnd;)
                {
                    ulong g = p & ~7UL, stop = Math.Min(pEnd, g + 8);
                    Granule(t, g, (byte)(((1 << (int)(stop - p)) - 1) << (int)(p - g)), kind, access);
                    p = stop;
                }
            a = pageEnd;
        }
    }

    private void Granule(int t, ulong g, byte mask, AccessKind kind, RaceAccess access)
    {
        var c = clocks[t];
        sync.TryGetValue(g, out var s);
        if (kind == AccessKind.Atomic || s is not null)
        {
            Synchronizing++;
            if (s is null) sync[g] = s = new SyncVar(n);
            // Acquire what the last releaser published (then check the plain accesses that came
            // before these bytes became a synchronization variable), then publish this clock.
            if (kind != AccessKind.Write) Join(c, s.Clock);
            if (kind == AccessKind.Atomic) Plain(t, g, 0xFF, isWrite: false, access, record: false);
            if (kind != AccessKind.Read)
            {
                Array.Copy(c, s.Clock, n);
                c[t]++;
            }
            return;
        }
        Checked++;
        Plain(t, g, mask, kind == AccessKind.Write, access, record: true);
    }

    /// <summary>Checks (and with record, notes) a plain access to the bytes of granule g in mask.</summary>
    private void Plain(int t, ulong g, byte mask, bool isWrite, RaceAccess access, bool record)
    {
        var c = clocks[t];
        for (int b = 0; b < 8; b++)
        {
            if ((mask & (1 << b)) == 0) continue;
            ulong addr = g + (ulong)b;
            if (!shadow.TryGetValue(addr, out var sh))
            {
                if (!record) continue;
                shadow[addr] = sh = new ByteShadow(n);
            }
            if (sh.Write is { } w && w.Vcpu != t && sh.WriteEpoch > c[w.Vcpu]) Found(w, access);
            if (isWrite)
                for (int u = 0; u < n; u++)
                {
                    var (epoch, r) = sh.Reads[u];
                    if (u != t && r is not null && epoch > c[u]) Found(r, access);
                }
            if (!record) { shadow.Remove(addr); continue; } // now a synchronization variable
            if (isWrite)
            {
                sh.Write = access;
                sh.WriteEpoch = c[t];
                Array.Clear(sh.Reads);
            }
            else sh.Reads[t] = (c[t], access);
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
        if (!ipiPending[to].TryGetValue(vector, out var p)) ipiPending[to][vector] = p = new uint[n];
        Join(p, clocks[from.Index]);
        clocks[from.Index][from.Index]++;
    }

    // Only the vector an IPI was sent with carries the sender's clock (a timer tick delivered first does not).
    public override void InterruptDelivered(Vcpu v, int vector)
    {
        if (ipiPending[v.Index].TryGetValue(vector, out var p)) Join(clocks[v.Index], p);
    }

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
