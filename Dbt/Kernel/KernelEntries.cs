using Harness.Dbt.Cache;
using Harness.Dbt.Indirect;
using Harness.Dbt.Dispatch;
using Harness.Dbt.Translate;
using Harness.Smp;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using Iced.Intel;

namespace Harness.Dbt.Kernel;

/// <summary>
/// Where the kernel's code is entered without a branch the translator sees: interrupt and exception
/// gates (the IDT) and the syscall entry (MSR LSTAR). At switchon each vCPU gets a shadow IDT whose
/// gates point at entry-mode translations of the kernel's handlers (<see cref="EntryPath"/>) and an
/// LSTAR pointing at the translation of the kernel's syscall entry; the lidt, sidt, wrmsr and rdmsr
/// rules keep the shadows following what the kernel installs, and report the kernel's own values
/// back to it. Also owns the DBT's per-CPU words (<see cref="PerCpu"/>): each vCPU's
/// jumptable pointer is written wherever its GS base points.
///
/// The syscall entry is translated without the tx-nextpc-loc save: syscall comes only from user
/// mode, where no kernel context on the CPU can be between a dispatcher exit's popfq and its jmp
/// (every such context was interrupted, and its interrupt frame holds its saved value), and sysretq
/// returns to user mode, where the value is dead.
/// </summary>
public sealed unsafe class KernelEntries
{
    private const int GateBytes = 16;

    private readonly Machine machine;
    private readonly CodeCache cache;
    private readonly BlockTranslator translator;
    private readonly DbtStats stats;
    private readonly ulong[] jumpTables;
    private readonly (ulong Base, uint Limit)[] guestIdt;
    private readonly ulong[] guestLstar;
    private readonly object shadowLock = new();
    private readonly Dictionary<(ulong, uint), ulong> shadows = new();
    // Shadow IDT pages of wiped caches, reused for the same guest IDT (the data pool only grows).
    private readonly Dictionary<(ulong, uint), ulong> retired = new();

    internal KernelEntries(Machine machine, CodeCache cache, BlockTranslator translator, DbtStats stats)
    {
        this.machine = machine;
        this.cache = cache;
        this.translator = translator;
        this.stats = stats;
        int n = machine.Vcpus.Length;
        jumpTables = new ulong[n];
        for (int i = 0; i < n; i++) jumpTables[i] = cache.Data.Allocate(JumpTable.Bytes, PhysicalMemory.PageSize);
        guestIdt = new (ulong, uint)[n];
        guestLstar = new ulong[n];
    }

    public ulong JumpTableOf(int vcpu) => jumpTables[vcpu];

    /// <summary>The frame's redundant slot relative to RSP when the CPU enters the gate of vector.</summary>
    public static int EntrySlotDelta(int vector) => Vectors.HasErrorCode(vector) ? -16 : -24;

    /// <summary>
    /// Switchon for one vCPU: give it a GS base if it has none, point its per-CPU words at its
    /// jumptable, and shadow the IDT and LSTAR it already has (none at boot; the lidt and wrmsr rules
    /// do it when the kernel installs them).
    /// </summary>
    public void SwitchOn(Vcpu v)
    {
        var s = v.S;
        // Only a kernel that never set a GS base gets the DBT's (not a vCPU in user mode, whose GS is the user's).
        if (s->GsBase == 0 && s->KernelGsBase == 0 && v.Cpl == 0) s->GsBase = cache.OwnGsBase(v.Index);
        InitPerCpu(v);
        if (s->IdtLimit != 0 && !cache.Contains(s->IdtBase)) InstallIdt(v, s->IdtBase, s->IdtLimit);
        if (s->Lstar != 0 && !cache.Contains(s->Lstar)) InstallLstar(v, s->Lstar);
    }

    /// <summary>
    /// Writes this vCPU's jumptable pointer into the kernel's per-CPU area: GS base in the kernel,
    /// the swapped-out KERNEL_GS_BASE while the vCPU runs user code (or is between an entry and its swapgs).
    /// </summary>
    internal void InitPerCpu(Vcpu v)
    {
        if (KernelGsBase(v) is not ulong gs)
            throw new TranslationException($"vCPU {v.Index}: no kernel per-CPU area (GS base 0x{v.S->GsBase:x}, kernel GS base 0x{v.S->KernelGsBase:x})");
        v.Write64(gs + cache.PerCpu.JumpTablePtr, jumpTables[v.Index]);
    }

    /// <summary>The kernel's per-CPU base of a vCPU: GS base in the kernel, the swapped-out KERNEL_GS_BASE otherwise; null if neither is a kernel address.</summary>
    internal static ulong? KernelGsBase(Vcpu v)
    {
        ulong gs = (long)v.S->GsBase < 0 ? v.S->GsBase : v.S->KernelGsBase;
        return (long)gs < 0 ? gs : null;
    }

    /// <summary>switchoff for one vCPU: the kernel's own IDT and LSTAR back in place.</summary>
    internal void SwitchOff(Vcpu v)
    {
        var (b, l) = guestIdt[v.Index];
        if (cache.Contains(v.S->IdtBase)) { v.S->IdtBase = b; v.S->IdtLimit = l; }
        if (cache.Contains(v.S->Lstar)) v.S->Lstar = guestLstar[v.Index];
    }

    /// <summary>Cache wipe: the shadow IDTs are rebuilt on the next switchon (at the same addresses), the jumptables emptied.</summary>
    internal void Wipe()
    {
        lock (shadowLock)
        {
            foreach (var (key, at) in shadows) retired[key] = at;
            shadows.Clear();
        }
        foreach (var jt in jumpTables) cache.WriteData(jt, new byte[JumpTable.Bytes]);
    }

    // ---- call-outs (run in the dispatcher; the native RSP is the stack pointer without the saved flags)

    internal ulong? Lidt(Vcpu v, ulong nativeRsp, Instruction ins)
    {
        ulong a = NativeOperand.Address(v, ins, nativeRsp);
        InstallIdt(v, v.Read64(a + 2), v.Read16(a));
        return null;
    }

    internal ulong? Sidt(Vcpu v, ulong nativeRsp, Instruction ins)
    {
        ulong a = NativeOperand.Address(v, ins, nativeRsp);
        var (b, l) = guestIdt[v.Index];
        v.Write16(a, (ushort)l);
        v.Write64(a + 2, b);
        return null;
    }

    /// <summary>
    /// lretq (same privilege): pops RIP and CS off the native stack, loads CS, and continues at the
    /// translation of RIP. The saved flags move up over the popped words so the exit stub finds them.
    /// </summary>
    internal static ulong? FarReturn(Vcpu v, ulong nativeRsp)
    {
        ulong rip = v.Read64(nativeRsp), cs = v.Read64(nativeRsp + 8) & 0xFFFF;
        if (((int)cs & 3) != v.S->Cpl || (cs & 0xFFFC) == 0)
            throw new Dispatch.Dispatcher.LeaveToNativeException($"lretq to CS 0x{cs:x}: only same-privilege far returns are emulated (the machine refuses it natively too)");
        ulong flags = v.Read64(nativeRsp - 8);
        v.Write64(nativeRsp + 8, flags);
        v.Gpr(Reg.Rsp) = nativeRsp + 8;
        v.S->Cs = (ushort)cs;
        return rip;
    }

    internal ulong? WrmsrCallOut(Vcpu v, ulong nativeRsp)
    {
        uint msr = (uint)v.Gpr(Reg.Rcx);
        ulong value = (v.Gpr(Reg.Rdx) << 32) | (uint)v.Gpr(Reg.Rax);
        if (msr == Vcpu.MsrLstar) InstallLstar(v, value);
        else if (msr == Vcpu.MsrGsBase)
        {
            v.S->GsBase = value;
            InitPerCpu(v);
        }
        else throw new TranslationException($"wrmsr call-out for MSR 0x{msr:x}, which the DBT does not shadow");
        return null;
    }

    internal ulong? RdmsrCallOut(Vcpu v, ulong nativeRsp)
    {
        ulong value = guestLstar[v.Index];
        v.Gpr(Reg.Rax) = (uint)value;
        v.Gpr(Reg.Rdx) = value >> 32;
        return null;
    }

    /// <summary>The syscall entry the kernel installed on a vCPU (its LSTAR as the kernel sees it).</summary>
    internal ulong GuestLstar(int vcpu) => guestLstar[vcpu];

    private void InstallLstar(Vcpu v, ulong native)
    {
        guestLstar[v.Index] = native;
        // DRK-style: syscall enters the dispatcher (which goes to the entry's translation).
        v.S->Lstar = translator.Options.InterruptsViaDispatcher ? cache.SyscallVmcall : translator.GetOrTranslate(v, native);
    }

    /// <summary>
    /// DRK-style gate stub of a vector: the frame's RIP, if it is a code-cache address, becomes the
    /// native state it stands for (<see cref="Switch.NativeFrame"/>) before the dispatcher goes to
    /// the handler's translation.
    /// </summary>
    private CallOut GateCallOut(int vector)
    {
        ulong errorCode = Vectors.HasErrorCode(vector) ? 8UL : 0;
        return (v, nativeRsp) =>
        {
            stats.CountGateEntry(v.Index);
            translator.CallOuts.NativeFrame(v, nativeRsp + errorCode, vector);
            return null;
        };
    }

    /// <summary>
    /// DRK-style iretq: a dispatcher exit. The frame's RIP (native: handlers only ever see native
    /// PCs) is replaced by its translation when iretq returns to kernel mode, and the dispatcher
    /// leaves to a real iretq in the stub page, which restores RIP, CS, RFLAGS, RSP and SS at once.
    /// </summary>
    internal ulong? IretqCallOut(Vcpu v, ulong nativeRsp)
    {
        ulong rip = v.Read64(nativeRsp), cs = v.Read64(nativeRsp + 8);
        if ((cs & 3) == 0 && !cache.Contains(rip))
        {
            // An unreadable RIP: natively the return's first fetch faults; returning there natively does the same.
            try { v.Write64(nativeRsp, translator.GetOrTranslate(v, rip)); }
            catch (UnreadableCodeException) { }
        }
        return cache.IretqStub;
    }

    private void InstallIdt(Vcpu v, ulong guestBase, uint limit)
    {
        guestIdt[v.Index] = (guestBase, limit);
        v.S->IdtBase = Shadow(v, guestBase, limit);
        v.S->IdtLimit = limit;
    }

    /// <summary>The shadow of the guest IDT at [base, base + limit], built on first use and shared by every vCPU that loads it.</summary>
    private ulong Shadow(Vcpu v, ulong guestBase, uint limit)
    {
        lock (shadowLock)
        {
            if (shadows.TryGetValue((guestBase, limit), out ulong shadow)) return shadow;
            int bytes = (int)limit + 1;
            var table = new byte[(bytes + GateBytes - 1) / GateBytes * GateBytes];
            for (int i = 0; i < bytes; i++) table[i] = v.Read8(guestBase + (ulong)i);
            for (int vector = 0; vector * GateBytes < bytes; vector++)
            {
                var gate = table.AsSpan(vector * GateBytes, GateBytes);
                byte type = gate[5];
                if ((type & 0x80) == 0 || (type & 0x0E) != 0x0E) continue; // not present, or not an interrupt/trap gate
                ulong target = BitConverter.ToUInt16(gate) | (ulong)BitConverter.ToUInt16(gate[6..]) << 16 | (ulong)BitConverter.ToUInt32(gate[8..]) << 32;
                ulong tx;
                if (translator.Options.InterruptsViaDispatcher) tx = translator.DispatcherStub(target, GateCallOut(vector), $"interrupt gate {vector}");
                else try { tx = translator.TranslateEntry(v, target, EntrySlotDelta(vector)); }
                catch (TranslationException ex) { throw new TranslationException($"the handler of vector {vector} (0x{target:x}) cannot be translated: {ex.Message}", ex); }
                BitConverter.TryWriteBytes(gate, (ushort)tx);
                BitConverter.TryWriteBytes(gate[6..], (ushort)(tx >> 16));
                BitConverter.TryWriteBytes(gate[8..], (uint)(tx >> 32));
            }
            if (!retired.Remove((guestBase, limit), out shadow)) shadow = cache.Data.Allocate((ulong)table.Length, PhysicalMemory.PageSize);
            cache.WriteData(shadow, table);
            shadows[(guestBase, limit)] = shadow;
            stats.ShadowIdts = shadows.Count;
            return shadow;
        }
    }
}
