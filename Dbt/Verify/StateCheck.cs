using Harness.Dbt.Cache;
using System.Numerics;
using System.Text;
using Harness.Dbt.Clients;
using Harness.Dbt.Dispatch;
using Harness.Dbt.Translate;
using Harness.Smp;
using Harness.Smp.Control;
using Harness.Smp.Cpu;

namespace Harness.Dbt.Verify;

/// <summary>The native stack the check compares: [Bottom, Top), virtual addresses.</summary>
public readonly record struct StackRange(ulong Bottom, ulong Top)
{
    public bool Contains(ulong rsp) => rsp >= Bottom && rsp <= Top;
}

/// <summary>
/// The translated machine's state at every dispatcher entry against a lockstep native reference
/// (docs/state-check.md). A second machine, set up the same way but without a DBT, runs natively on
/// the hook's thread: at each entry it is advanced to exactly the native instruction count prof
/// reports (prof counts every native instruction executed from the cache, each segment when it
/// starts, and at a dispatcher entry every started segment has run to its end), so both stand at
/// the same native boundary. There the entry's native-equivalent state (RIP = the entry's native
/// target, RFLAGS = the word its pushfq saved, RSP = RSP + the entry's words, every other GPR as it
/// is, the stack from RSP up to its top) must equal the reference's. The first difference stops
/// the translated machine with one diff table (<see cref="Failure"/>).
///
/// Two differences are by design and compare equal:
/// <list type="bullet">
/// <item>Under call/ret identity (the default configuration) return addresses are code-cache
/// addresses: a cache address that is a translated call's return point (recorded at layout)
/// compares as its native address (its recovery point's), on the stack and in registers (code may read its return
/// address). No-callret never exposes a cache address, so nothing is mapped there.</item>
/// <item>Translations keep scratch below RSP (the kernel contract: nothing live there), so stack
/// words that native code has not written since they were last below RSP (a frame's
/// uninitialized locals, alignment gaps) hold scratch in the translated run and stale data
/// natively. The reference is stepped one instruction at a time and every stack word RSP leaves
/// behind gets a poison value (invisible to a program that keeps nothing below RSP); a stack
/// word or register that holds the poison natively is undefined and not compared.</item>
/// </list>
///
/// Scope: one vCPU, no interrupts (an interrupt's arrival has no native counterpart), no faults
/// in the checked code, the DBT on from the start and no cache flush. Test-only: production runs
/// leave <see cref="DbtOptions.OnDispatcherEntry"/> null.
/// </summary>
public sealed class StateCheck
{
    /// <summary>
    /// What the reference holds in stack words RSP has left (natively undefined). Compared byte by
    /// byte (code may write part of a word: a dword local): a byte still holding the poison's byte
    /// at its position is undefined. No byte is 00, ff or ASCII, so program data rarely matches one.
    /// </summary>
    public const ulong Poison = 0xDEAD_BEEF_C0DE_F1A5;

    // pushfq stores RF and VM as 0 whatever they were; nothing else is masked.
    private const ulong IgnoredFlags = Rflags.RF | Rflags.VM;

    private readonly Machine translated, reference;
    private readonly StackRange? stack;
    private readonly bool mapCacheAddresses;
    private Prof prof = null!;
    private Vcpu? refCpu;

    /// <summary>The translated machine's DBT (prof attached).</summary>
    public KernelDbt Dbt { get; private set; } = null!;

    /// <summary>Dispatcher entries compared so far.</summary>
    public int EntriesChecked { get; private set; }

    /// <summary>Stack words compared so far; of those, code-cache return addresses mapped to native ones; and words skipped as natively undefined.</summary>
    public long StackWordsChecked { get; private set; }
    public long CacheAddressesMapped { get; private set; }
    public long UndefinedWordsSkipped { get; private set; }

    /// <summary>The first difference (a diff table), or null.</summary>
    public string? Failure { get; private set; }

    private StateCheck(Machine translated, Machine reference, StackRange? stack, bool mapCacheAddresses)
    {
        this.translated = translated;
        this.reference = reference;
        this.stack = stack;
        this.mapCacheAddresses = mapCacheAddresses;
    }

    /// <summary>
    /// Attaches the DBT (options plus prof and the hook) to machine, with reference as its native
    /// twin: both built with the same options, image and memory contents, one vCPU each, nothing
    /// attached to the reference. stack: the native stack (compared from RSP up to its top while RSP
    /// is in it; its dead part is poisoned in the reference); null: no stack comparison, and the
    /// reference runs in whole slices instead of single steps. Run with <see cref="Run"/>.
    /// </summary>
    public static StateCheck Attach(Machine machine, Machine reference, DbtOptions? options = null, StackRange? stack = null)
    {
        var o = options ?? DbtOptions.Default;
        if (machine.Vcpus.Length != 1 || reference.Vcpus.Length != 1)
            throw new ArgumentException("the state check needs one vCPU on both machines (prof's count is the native boundary only then)");
        if (reference.AttachedAgents.Count != 0)
            throw new ArgumentException("the reference machine must run natively (no DBT or other host agent attached)");
        if (o.OnDispatcherEntry is not null) throw new ArgumentException("the options already have a dispatcher-entry hook");
        if (o.SwitchOnAt is > 0) throw new ArgumentException("the state check needs the DBT on from the start (SwitchOnAt)");
        if (stack is { } s && (s.Bottom >= s.Top || ((s.Bottom | s.Top) & 7) != 0)) throw new ArgumentException("the stack range must be 8-byte aligned and not empty");
        var check = new StateCheck(machine, reference, stack, mapCacheAddresses: o.CallRet);
        var clients = o.Clients.Contains(Prof.ClientName) ? o.Clients : [.. o.Clients, Prof.ClientName];
        check.Dbt = KernelDbt.Attach(machine, o with { Clients = clients, OnDispatcherEntry = check.OnEntry });
        check.prof = check.Dbt.Client<Prof>()!;
        return check;
    }

    /// <summary>
    /// Boots the reference and runs the translated machine (Machine.Run's arguments, used for both);
    /// after a translated exit, runs the reference to its end and compares the exit status and the
    /// native instruction count. Returns the translated run's result; <see cref="Failure"/> says
    /// whether the check passed.
    /// </summary>
    public RunResult Run(CancellationToken cancel = default, ulong? entry = null, Action<Vcpu>? setup = null)
    {
        refCpu = reference.Boot(entry, setup);
        if (stack is { } s)
        {
            // Nothing on the stack is defined yet: all of it below the initial RSP is dead.
            ulong rsp = refCpu.Gpr(Reg.Rsp);
            PoisonStack(s.Bottom, s.Contains(rsp) ? rsp : s.Top);
        }
        var r = translated.Run(cancel, entry, setup);
        if (Failure is null && r.Exited) Finish(r);
        return r;
    }

    private void OnEntry(Vcpu v, DispatcherEntry e)
    {
        if (Failure is not null) return;
        EntriesChecked++;
        string? why;
        try { why = Compare(v, e); }
        catch (Exception ex) { why = $"dispatcher entry {EntriesChecked}: the check itself failed: {ex.GetType().Name}: {ex.Message}"; }
        if (why is null) return;
        Failure = why;
        translated.Stop(StopReason.HostError, 0, "dbt state check: " + why);
    }

    /// <summary>The reference advanced to exactly count executed instructions, or why not.</summary>
    private string? Advance(long count)
    {
        var r = refCpu ?? throw new InvalidOperationException("the reference was not booted: run through StateCheck.Run");
        if (r.Executed > count)
            return $"prof counts {count:N0} native instructions, but the reference has already executed {r.Executed:N0}";
        if (stack is { } s)
        {
            // One instruction at a time: every stack word RSP leaves behind becomes the poison.
            ulong rsp0 = r.Gpr(Reg.Rsp);
            while (r.Executed < count && !reference.Stopping)
            {
                if (r.RunFor(1) != RunExit.SliceEnd) break;
                ulong rsp1 = r.Gpr(Reg.Rsp);
                if (rsp1 > rsp0 && s.Contains(rsp0) && s.Contains(rsp1)) PoisonStack(rsp0, rsp1);
                rsp0 = rsp1;
            }
        }
        else
        {
            while (r.Executed < count && !reference.Stopping)
                if (r.RunFor(count - r.Executed) != RunExit.SliceEnd) break;
        }
        return r.Executed == count ? null
            : $"the native reference stopped after {r.Executed:N0} instructions, before the {count:N0} prof counts ({(reference.Stopping ? reference.StopState.Message : "vCPU idle")})";
    }

    private void PoisonStack(ulong from, ulong to)
    {
        for (ulong a = from & ~7UL; a < to; a += 8) refCpu!.Write64(a, Poison);
    }

    private string? Compare(Vcpu v, DispatcherEntry e)
    {
        var r = refCpu!;
        string where = Describe(e);
        if (v.InterruptsDelivered != 0)
            return $"dispatcher entry {EntriesChecked} ({where}): the translated vCPU took an interrupt; the state check has no native boundary for it (run without interrupts)";
        // A call-out's instruction is counted by its segment but emulated after this entry.
        long count = prof.Read().Instructions - (e.NativePending ? 1 : 0);
        if (Advance(count) is { } stuck) return $"dispatcher entry {EntriesChecked} ({where}): {stuck}";
        if (r.InterruptsDelivered != 0 || r.ExceptionsDelivered != v.ExceptionsDelivered)
            return $"dispatcher entry {EntriesChecked} ({where}): interrupts or exceptions differ (reference {r.InterruptsDelivered}/{r.ExceptionsDelivered}, translated {v.InterruptsDelivered}/{v.ExceptionsDelivered}); the check needs runs without them";

        var sorted = Dbt.Translator.SortedBlocks();
        var rows = new List<Row>();
        ulong rsp = v.Gpr(Reg.Rsp);
        ulong savedFlags = v.Read64(rsp);
        ulong nativeRsp = rsp + 8UL * (ulong)e.Words;
        rows.Add(new Row("rip", r.Rip, e.Native, null));
        rows.Add(new Row("rflags", r.Rflags & ~IgnoredFlags, savedFlags & ~IgnoredFlags, null) { Flags = true });
        rows.Add(new Row("rsp", r.Gpr(Reg.Rsp), nativeRsp, null));
        for (int g = 0; g < 16; g++)
        {
            if (g == Reg.Rsp) continue;
            ulong raw = v.Gpr(g);
            ulong nativeValue = r.Gpr(g);
            // A register loaded from dead stack (a whole word, or a zero-extended dword of it) is undefined.
            bool undefinedReg = nativeValue == Poison || nativeValue == unchecked((uint)Poison);
            rows.Add(new Row(RegNames[g], nativeValue, Map(raw, sorted), raw) { UndefinedBytes = undefinedReg ? ~0UL : 0 });
        }
        int regDiffs = rows.Count(x => x.Differs);

        // The stack: the same addresses in both, from the lower of the two RSPs up to the top.
        var slots = new List<Row>();
        int slotDiffs = 0, words = 0, undefined = 0;
        string stackLine;
        ulong from = Math.Min(nativeRsp, r.Gpr(Reg.Rsp)) & ~7UL;
        if (stack is not { } s) stackLine = "stack: not compared (no stack range given)";
        else if (!s.Contains(from)) stackLine = $"stack: not compared (RSP 0x{from:x} is outside 0x{s.Bottom:x}..0x{s.Top:x})";
        else
        {
            string? unreadable = null;
            for (ulong a = from; a < s.Top; a += 8)
            {
                ulong nw, tw;
                try { nw = r.Read64(a); }
                catch (GuestFault) { unreadable = $"0x{a:x} is unreadable in the reference"; break; }
                try { tw = v.Read64(a); }
                catch (GuestFault) { unreadable = $"0x{a:x} is unreadable in the translated machine"; break; }
                words++;
                var slot = new Row($"[0x{a:x}]", nw, Map(tw, sorted), tw) { Offset = (long)(a - r.Gpr(Reg.Rsp)), UndefinedBytes = PoisonBytes(nw) };
                if (slot.Undefined) { undefined++; continue; }
                if (slot.Mapped) CacheAddressesMapped++;
                if (slot.Differs) { slotDiffs++; slots.Add(slot); }
            }
            StackWordsChecked += words - undefined;
            UndefinedWordsSkipped += undefined;
            stackLine = $"stack 0x{from:x}..0x{s.Top:x}: {words} words, {undefined} natively undefined{(unreadable is null ? "" : $", stopped at {unreadable}")}: {(slotDiffs == 0 ? "equal" : $"{slotDiffs} differ")}";
        }
        if (regDiffs == 0 && slotDiffs == 0) return null;

        var sb = new StringBuilder();
        sb.AppendLine($"state differs from native at dispatcher entry {EntriesChecked} ({where}), after {count:N0} native instructions:");
        sb.AppendLine($"  {"",-30} {"native (reference)",-18}  {"translated",-18}");
        foreach (var x in rows) sb.AppendLine(x.Format());
        sb.AppendLine("  " + stackLine);
        foreach (var x in slots.Take(16)) sb.AppendLine(x.Format());
        if (slots.Count > 16) sb.AppendLine($"  ... {slots.Count - 16} more differing stack words");
        if (e.Edge is { Kind: not EdgeKind.CallOut } edge && edge.PatchSite != 0)
        {
            sb.AppendLine("  the translated block that branched to the edge:");
            foreach (var line in Dbt.Describe(edge.PatchSite).Split('\n')) if (line.Length > 0) sb.AppendLine("    " + line.TrimEnd());
        }
        return sb.ToString().TrimEnd();
    }

    /// <summary>After both runs: the reference runs to its end; exit status and native instruction count must match.</summary>
    private void Finish(RunResult translatedResult)
    {
        var r = refCpu!;
        long count = prof.Read().Instructions;
        while (!reference.Stopping && r.Executed <= count)
            if (r.RunFor(count + 1 - r.Executed) != RunExit.SliceEnd) break;
        var (reason, status, message) = reference.StopState;
        string? why = null;
        if (!reference.Stopping) why = $"the native reference did not stop within {count + 1:N0} instructions ({count:N0} translated)";
        else if (r.Executed != count) why = $"the native reference stopped after {r.Executed:N0} instructions, the translated run after {count:N0}";
        else if ((reason, status) != (translatedResult.Reason, translatedResult.ExitStatus))
            why = $"the native reference ended with {reason} (status {status}: {message}), the translated run with {translatedResult.Reason} (status {translatedResult.ExitStatus})";
        if (why is not null) Failure = "at the end: " + why;
    }

    /// <summary>The bytes of a native stack word that still hold the poison (mask of whole bytes).</summary>
    private static ulong PoisonBytes(ulong word)
    {
        ulong mask = 0;
        for (int b = 0; b < 64; b += 8)
            if (((word ^ Poison) >> b & 0xFF) == 0) mask |= 0xFFUL << b;
        return mask;
    }

    /// <summary>A translated value as native code would see it: a code-cache return address becomes its native address.</summary>
    private ulong Map(ulong value, TranslatedBlock[] sorted)
    {
        if (!mapCacheAddresses || !Dbt.Cache.Contains(value) || !BlockTranslator.IsReturnPoint(sorted, value)) return value;
        return BlockTranslator.RecoverAt(sorted, value) is { Pops: 0, FlagsWord: -1, TargetOnStack: false } rec ? rec.Native : value;
    }

    private static string Describe(DispatcherEntry e) => e.Kind switch
    {
        DispatcherEntryKind.JumpTableMiss => $"jumptable miss to native 0x{e.Native:x}",
        DispatcherEntryKind.CallOut => $"call-out for '{e.Edge?.What}' at native 0x{e.Native:x}",
        _ => $"{e.Edge?.Kind.ToString().ToLowerInvariant()} edge stub 0x{e.Site - CodeCache.EdgeVmcallOffset:x} to native 0x{e.Native:x}",
    };

    private static readonly string[] RegNames = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

    private static readonly (ulong Bit, string Name)[] FlagNames =
    [
        (Rflags.CF, "CF"), (Rflags.PF, "PF"), (Rflags.AF, "AF"), (Rflags.ZF, "ZF"), (Rflags.SF, "SF"), (Rflags.TF, "TF"),
        (Rflags.IF, "IF"), (Rflags.DF, "DF"), (Rflags.OF, "OF"), (Rflags.IOPL, "IOPL"), (Rflags.NT, "NT"), (Rflags.AC, "AC"),
        (Rflags.VIF, "VIF"), (Rflags.VIP, "VIP"), (Rflags.ID, "ID"),
    ];

    /// <summary>One compared value: native, the translated value as native code sees it, and the raw translated value.</summary>
    private sealed record Row(string Name, ulong Native, ulong Translated, ulong? Raw)
    {
        public bool Flags { get; init; }
        public long? Offset { get; init; }
        /// <summary>Bytes native code has not defined (they hold the poison); not compared.</summary>
        public ulong UndefinedBytes { get; init; }
        public bool Undefined => UndefinedBytes == ~0UL;
        public bool Mapped => Raw is ulong raw && raw != Translated;
        public bool Differs => ((Native ^ Translated) & ~UndefinedBytes) != 0;

        public string Format()
        {
            string name = Offset is long off ? $"rsp{(off < 0 ? "-" : "+")}0x{Math.Abs(off):x} {Name}" : Name;
            var sb = new StringBuilder($"  {name,-30} {Native,-18:x16}  {Translated,-18:x16}");
            if (Mapped) sb.Append($"  (cache 0x{Raw:x} mapped)");
            if (Undefined) sb.Append("  (natively undefined: from dead stack)");
            else if (UndefinedBytes != 0) sb.Append($"  (bytes {UndefinedBytes:x16} natively undefined)");
            if (Differs)
            {
                sb.Append("  <-- differs");
                if (Flags)
                    sb.Append(": ").Append(string.Join(", ", FlagNames.Where(f => ((Native ^ Translated) & f.Bit) != 0)
                        .Select(f => $"{f.Name} native {Field(Native, f.Bit)}, translated {Field(Translated, f.Bit)}")));
            }
            return sb.ToString().TrimEnd();
        }

        private static ulong Field(ulong value, ulong mask) => (value & mask) >> BitOperations.TrailingZeroCount(mask);
    }
}
