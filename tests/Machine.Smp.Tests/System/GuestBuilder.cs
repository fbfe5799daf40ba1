using Harness.Smp.Control;
using Harness.Smp.Cpu;
using Harness.Smp.Memory;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.SystemTests;

/// <summary>
/// Builds a small guest with Iced's 64-bit assembler at <see cref="Code"/> (identity-mapped at
/// boot), plus the descriptor tables a kernel needs: a GDT with ring-0 and ring-3 segments laid
/// out for syscall/sysret, a 64-bit TSS (RSP0, IST1), an IDT whose gates point at assembler
/// labels, and optional 4 KiB page tables. Tables are written by the host after assembly (label
/// addresses are known then); the guest loads them with <see cref="Prologue"/>.
/// </summary>
public sealed class Guest : IDisposable
{
    // Guest physical (= identity-mapped virtual) layout.
    public const ulong Code = 0x100000;
    public const ulong Gdt = 0x110000, Idt = 0x111000, Tss = 0x112000, Gdtr = 0x113000, Idtr = 0x113010;
    public const ulong Data = 0x120000;          // results written by the guest, read by the host
    public const ulong KStackTop = 0x140000;     // BSP kernel stack
    public const ulong Rsp0Top = 0x150000;       // TSS.RSP0 default
    public const ulong IstTop = 0x158000;        // TSS.IST1
    public const ulong UStackTop = 0x170000;     // user stack (page 0x16F000 is user-accessible)
    public const ulong UData = 0x180000;         // user-accessible data page
    public const ulong ApStackBase = 0x1C0000;   // AP n stack top = ApStackBase + n * 0x4000
    public const ulong PtPool = 0x600000;        // page tables built by PageTables

    // GDT: 0x08 kernel code, 0x10 kernel data, 0x18 (user 32-bit code, unused), 0x20 user data, 0x28 user code, 0x30 TSS.
    public const ushort KCs = 0x08, KDs = 0x10, UDs = 0x23, UCs = 0x2B, TssSel = 0x30;
    /// <summary>STAR: syscall CS = 0x08 / SS = 0x10; sysret CS = 0x18+16|3 = 0x2B, SS = 0x18+8|3 = 0x23.</summary>
    public const ulong StarValue = (0x18UL << 48) | (0x08UL << 32);

    public readonly Assembler A = new(64);
    public readonly Machine M;
    public readonly MemoryStream ConsoleStream = new();
    public ulong Rsp0 = Rsp0Top, Ist1 = IstTop;

    private readonly Dictionary<int, (Label Handler, bool Trap, int Dpl, int Ist, bool Present)> gates = new();
    private readonly Dictionary<Label, ulong> labels = new();
    private AssemblerResult? assembled;

    public Guest(int vcpus = 1, ExecutionControl? control = null, long maxInstructions = 2_000_000)
    {
        M = new Machine(new MachineOptions
        {
            Vcpus = vcpus,
            MemoryBytes = 32UL << 20,
            ReservedBytes = 1UL << 20,
            Control = control ?? new Deterministic(quantum: 100),
            MaxInstructions = maxInstructions,
            Console = ConsoleStream,
        });
    }

    public string ConsoleText => global::System.Text.Encoding.ASCII.GetString(ConsoleStream.ToArray());

    /// <summary>
    /// An IDT gate (64-bit interrupt gate 0x8E, or trap gate 0x8F) pointing at handler. Iced labels
    /// are values: pass the label after <c>A.Label(ref l)</c> emitted it, or use <see cref="HandlerHere"/>.
    /// </summary>
    public void Gate(int vector, Label handler, bool trap = false, int dpl = 0, int ist = 0, bool present = true)
        => gates[vector] = (handler, trap, dpl, ist, present);

    /// <summary>Emits a label here and points the IDT gate for vector at it.</summary>
    public Label HandlerHere(int vector, bool trap = false, int dpl = 0, int ist = 0, bool present = true)
    {
        var l = A.CreateLabel($"vec{vector:x}");
        A.Label(ref l);
        Gate(vector, l, trap, dpl, ist, present);
        return l;
    }

    /// <summary>Emits: lgdt, lidt (limit 0xFFF), ltr 0x30, mov rsp, KStackTop.</summary>
    public void Prologue(bool loadTss = true, ulong stack = KStackTop)
    {
        A.lgdt(__[Gdtr]);
        A.lidt(__[Idtr]);
        if (loadTss)
        {
            A.mov(ax, TssSel);
            A.ltr(ax);
        }
        A.mov(rsp, stack);
    }

    /// <summary>Emits: mov eax, status; out 0xF4, eax.</summary>
    public void Exit(uint status)
    {
        A.mov(eax, status);
        A.@out(0xF4, eax);
        A.hlt();
    }

    /// <summary>Emits a store of a 64-bit register to Data + slot * 8.</summary>
    public void Store(int slot, AssemblerRegister64 r) => A.mov(__qword_ptr[Data + (ulong)slot * 8], r);

    /// <summary>Emits a wrmsr of a constant (clobbers rax, rcx, rdx).</summary>
    public void Wrmsr(uint msr, ulong value)
    {
        A.mov(ecx, msr);
        A.mov(eax, (uint)value);
        A.mov(edx, (uint)(value >> 32));
        A.wrmsr();
    }

    /// <summary>Emits a rdmsr into rax (full 64-bit value; clobbers rcx, rdx).</summary>
    public void Rdmsr(uint msr)
    {
        A.mov(ecx, msr);
        A.rdmsr();
        A.shl(rdx, 32);
        A.or(rax, rdx);
    }

    public ulong Addr(Label l) => assembled is { } r ? r.GetLabelRIP(l) : throw new InvalidOperationException("not assembled yet");

    public ulong Slot(int slot) => M.Memory.ReadU64(Data + (ulong)slot * 8);
    public ulong ReadU64(ulong pa) => M.Memory.ReadU64(pa);

    /// <summary>Assembles at <see cref="Code"/> and writes code, GDT, TSS and IDT into guest memory.</summary>
    public void Build()
    {
        if (assembled is not null) return;
        using var ms = new MemoryStream();
        assembled = A.Assemble(new StreamCodeWriter(ms), Code, BlockEncoderOptions.ReturnNewInstructionOffsets);
        if (ms.Length > 0x10000) throw new InvalidOperationException("guest code too large");
        M.Memory.Write(Code, ms.ToArray());
        WriteTables();
    }

    private void WriteTables()
    {
        var mem = M.Memory;
        mem.WriteU64(Gdt + 0x00, 0);
        mem.WriteU64(Gdt + 0x08, 0x00AF_9A00_0000_FFFF); // 64-bit code, DPL 0
        mem.WriteU64(Gdt + 0x10, 0x00CF_9200_0000_FFFF); // data, DPL 0
        mem.WriteU64(Gdt + 0x18, 0x00CF_FA00_0000_FFFF); // 32-bit code, DPL 3 (sysret compat slot)
        mem.WriteU64(Gdt + 0x20, 0x00CF_F200_0000_FFFF); // data, DPL 3
        mem.WriteU64(Gdt + 0x28, 0x00AF_FA00_0000_FFFF); // 64-bit code, DPL 3
        // 64-bit available TSS (type 9), P=1, limit 0x67.
        ulong tb = Tss;
        ulong lo = 0x67UL | ((tb & 0xFFFFFF) << 16) | (0x89UL << 40) | (((tb >> 24) & 0xFF) << 56);
        mem.WriteU64(Gdt + 0x30, lo);
        mem.WriteU64(Gdt + 0x38, tb >> 32);
        const int gdtLimit = 0x3F;
        mem.Write(Gdtr, BitConverter.GetBytes((ushort)gdtLimit));
        mem.WriteU64(Gdtr + 2, Gdt);
        mem.Write(Idtr, BitConverter.GetBytes((ushort)0xFFF));
        mem.WriteU64(Idtr + 2, Idt);
        // TSS: RSP0 at 4, IST1 at 36, I/O map base beyond the limit.
        mem.Span(Tss, 0x68).Clear();
        mem.WriteU64(Tss + 4, Rsp0);
        mem.WriteU64(Tss + 36, Ist1);
        mem.Write(Tss + 0x66, BitConverter.GetBytes((ushort)0x68));
        mem.Span(Idt, 0x1000).Clear();
        foreach (var (vector, g) in gates)
        {
            ulong target = Addr(g.Handler);
            byte attr = (byte)((g.Present ? 0x80 : 0) | (g.Dpl << 5) | (g.Trap ? 0xF : 0xE));
            ulong glo = (target & 0xFFFF) | ((ulong)KCs << 16) | ((ulong)(g.Ist & 7) << 32) | ((ulong)attr << 40) | (((target >> 16) & 0xFFFF) << 48);
            mem.WriteU64(Idt + (ulong)vector * 16, glo);
            mem.WriteU64(Idt + (ulong)vector * 16 + 8, target >> 32);
        }
    }

    /// <summary>Fills AP n's boot mailbox from the host (guests usually do it themselves).</summary>
    public static ulong Mailbox(int n) => Boot.BootLayout.MailboxAddress(n);

    /// <summary>Builds (if needed) and runs from <see cref="Code"/>; stops the machine if the host timeout passes.</summary>
    public RunResult Run(Action<Vcpu>? setup = null, int timeoutMs = 15_000)
    {
        Build();
        var task = Task.Run(() => M.Run(entry: Code, setup: setup));
        if (!task.Wait(timeoutMs))
        {
            M.Stop(StopReason.Interrupted, 0, $"test timeout after {timeoutMs} ms (host hang)");
            if (!task.Wait(10_000)) throw new TimeoutException("machine did not stop after a test timeout");
        }
        return task.Result;
    }

    public PageTables NewPageTables(ulong pool = PtPool) => new(M.Memory, pool);

    public void Dispose()
    {
        M.Dispose();
        ConsoleStream.Dispose();
    }
}

/// <summary>4-level page tables with 4 KiB pages, built by the host in guest physical memory.</summary>
public sealed class PageTables
{
    public const ulong P = 1, RW = 2, US = 4, PWT = 8, PCD = 16, A = 0x20, D = 0x40, NX = 1UL << 63;
    private const ulong AddrMask = 0x000F_FFFF_FFFF_F000;
    private readonly PhysicalMemory mem;
    private ulong next;
    public readonly ulong Root;

    public PageTables(PhysicalMemory mem, ulong pool)
    {
        this.mem = mem;
        next = pool;
        Root = Alloc();
    }

    private ulong Alloc()
    {
        ulong p = next;
        next += 0x1000;
        mem.Span(p, 0x1000).Clear();
        return p;
    }

    /// <summary>Physical address of va's PTE, creating intermediate tables (P|RW|US) as needed.</summary>
    public ulong PteAddress(ulong va)
    {
        ulong table = Root;
        for (int level = 3; level >= 1; level--)
        {
            ulong ea = table + ((va >> (12 + 9 * level)) & 511) * 8;
            ulong e = mem.ReadU64(ea);
            if ((e & P) == 0)
            {
                e = Alloc() | P | RW | US;
                mem.WriteU64(ea, e);
            }
            table = e & AddrMask;
        }
        return table + ((va >> 12) & 511) * 8;
    }

    /// <summary>Maps one 4 KiB page; flags without P give a not-present entry. Returns the PTE address.</summary>
    public ulong Map(ulong va, ulong pa, ulong flags)
    {
        ulong pte = PteAddress(va);
        mem.WriteU64(pte, (pa & AddrMask) | flags);
        return pte;
    }

    public void Identity(ulong start, ulong end, ulong flags)
    {
        for (ulong a = start & ~0xFFFUL; a < end; a += 0x1000) Map(a, a, flags);
    }

    /// <summary>
    /// The tests' usual map: identity 0..8 MiB supervisor read/write (covers the machine's low
    /// tables, code, stacks, data and this pool); with user = true also the code (64 KiB), the
    /// user stack page and the user data page are user-accessible.
    /// </summary>
    public PageTables Standard(bool user)
    {
        Identity(0, 0x800000, P | RW);
        if (user)
        {
            Identity(Guest.Code, Guest.Code + 0x10000, P | RW | US);
            Identity(Guest.UStackTop - 0x4000, Guest.UStackTop, P | RW | US);
            Identity(Guest.UData, Guest.UData + 0x1000, P | RW | US);
        }
        return this;
    }
}

public static class GuestAsm
{
    /// <summary>Emits an iretq into ring 3 at target with the user stack and the given RFLAGS (clobbers rax).</summary>
    public static void EnterUser(this Guest g, Label target, ulong rflags = 0x202, ulong userRsp = Guest.UStackTop)
    {
        var a = g.A;
        a.push(Guest.UDs);
        a.mov(rax, userRsp);
        a.push(rax);
        a.push((int)rflags);
        a.push(Guest.UCs);
        a.lea(rax, __[target]);
        a.push(rax);
        a.iretq();
    }

    /// <summary>Emits mov rax, root; mov cr3, rax.</summary>
    public static void LoadCr3(this Guest g, ulong root)
    {
        g.A.mov(rax, root);
        g.A.mov(cr3, rax);
    }
}
