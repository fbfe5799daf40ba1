using Harness.Smp.Boot;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Properties.Generators;

/// <summary>
/// A timer: the first tick after Delay guest instructions, then Ticks - 1 more every Period; the
/// handler makes an indirect call (a jumptable miss). Nest: the handler runs with interrupts on
/// once it has saved its frame (sti ... cli), so a probe interrupt can arrive inside it.
/// </summary>
public sealed record TimerPlan(int Delay, int Period, int Ticks, bool Nest = false)
{
    public override string ToString() => $"timer: first tick after {Delay} instructions, {Ticks} tick(s), period {Period}{(Nest ? ", handler interruptible" : "")}";
}

/// <summary>
/// A generated ring-0 program: every vCPU runs the same worker (Pieces) over its own private page;
/// the BSP waits for the others and exits 0. The worker sets the pool registers to Registers, arms
/// the timer if there is one, runs the pieces, waits for its ticks, and stores its registers and
/// flags in its page, which is what runs compare. ToString prints the whole program as assembly.
/// </summary>
public sealed record GuestProgram(IReadOnlyList<Piece> Pieces, ulong[] Registers, TimerPlan? Timer, int Vcpus)
{
    // Not a field: `with` copies fields, and a shrunk program must not inherit its parent's image.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<GuestProgram, GuestImage> images = new();

    /// <summary>The assembled program (built once per program object).</summary>
    public GuestImage Image => images.GetValue(this, ProgramBuilder.Build);

    public int Instructions => Image.Instructions;

    public bool Faults => Pieces.Any(p => p.Faults);

    public override string ToString() => Image.Listing;
}

/// <summary>A program assembled: bytes and gates (in the RingZeroGuest), fixups, pointers, symbols, listing.</summary>
public sealed class GuestImage
{
    internal RingZeroGuest Guest { get; init; } = null!;
    internal List<(Label Fault, Label Fixup)> Fixups { get; init; } = [];
    internal List<(ulong Offset, Label Target)> Pointers { get; init; } = [];
    /// <summary>Labels as bound (Iced's Label is a struct: only the bound copy knows its instruction).</summary>
    internal Dictionary<ulong, Label> Bound { get; init; } = [];

    private ulong Address(Label l) => Guest.Address(Bound.TryGetValue(l.Id, out var b) ? b : l);
    public required string Listing { get; init; }
    public required int Instructions { get; init; }
    /// <summary>Instructions the pieces emitted (in the worker and in their functions): a program's size without the fixed scaffolding.</summary>
    public required int PieceInstructions { get; init; }
    public required int Vcpus { get; init; }
    public required ulong[] Constants { get; init; }

    public ulong Entry => Layout.Code;

    /// <summary>The symbols a DBT reads from a kernel: the exception table, the exception-table lookup (a sized function: no flush parks a vCPU in it) and the thread list.</summary>
    public IReadOnlyDictionary<string, ulong> Symbols => new Dictionary<string, ulong>
    {
        ["__ex_table_start"] = Layout.ExTable,
        ["__ex_table_end"] = Layout.ExTable + (ulong)Fixups.Count * 16,
        ["thread_list"] = Layout.ThreadList,
        ["exception_fixup"] = Address(ExceptionFixup.Start),
    };

    public IReadOnlyDictionary<string, ulong> SymbolSizes => new Dictionary<string, ulong>
    {
        ["exception_fixup"] = Address(ExceptionFixup.End) - Address(ExceptionFixup.Start),
    };

    /// <summary>The DBT's view of this kernel.</summary>
    public Harness.Dbt.Kernel.KernelImage Kernel => Harness.Dbt.Kernel.KernelImage.FromSymbols(Symbols, SymbolSizes);

    internal (Label Start, Label End) ExceptionFixup { get; init; }

    /// <summary>Code outside the main image: the jumptable-aliased far functions, at their addresses.</summary>
    internal List<(ulong Address, byte[] Bytes)> Far { get; init; } = [];

    /// <summary>(fault, fixup) native addresses of every faulting instruction.</summary>
    public IEnumerable<(ulong Fault, ulong Fixup)> FixupAddresses => Fixups.Select(f => (Address(f.Fault), Address(f.Fixup)));

    /// <summary>Writes the program into a machine: code, IDT, the exception table, function pointers, constants, the thread list.</summary>
    public void Load(Harness.Smp.Machine m)
    {
        Guest.Load(m);
        ulong Phys(ulong va) => va - BootLayout.KernelAlias;
        foreach (var (at, bytes) in Far) m.Memory.Write(Phys(at), bytes);
        var table = new byte[Math.Max(16, Fixups.Count * 16)];
        int i = 0;
        foreach (var (fault, fixup) in FixupAddresses)
        {
            BitConverter.TryWriteBytes(table.AsSpan(i * 16), fault);
            BitConverter.TryWriteBytes(table.AsSpan(i * 16 + 8), fixup);
            i++;
        }
        m.Memory.Write(Phys(Layout.ExTable), table);
        for (int n = 0; n < Vcpus; n++)
            foreach (var (offset, target) in Pointers)
                m.Memory.WriteU64(Phys(Layout.Private(n) + offset), Address(target));
        var constants = new byte[Constants.Length * 8];
        for (int k = 0; k < Constants.Length; k++) BitConverter.TryWriteBytes(constants.AsSpan(k * 8), Constants[k]);
        m.Memory.Write(Phys(Layout.Constants), constants);
        // struct thread (guest/kernel/kernel.h): rsp at 0, kstack at 32, kstack_top at 40, all_next at 120.
        m.Memory.WriteU64(Phys(Layout.ThreadList), Layout.Threads);
        for (int n = 0; n < Vcpus; n++)
        {
            ulong t = Layout.Threads + (ulong)n * Layout.ThreadStride;
            m.Memory.WriteU64(Phys(t), Layout.StackTop(n));
            m.Memory.WriteU64(Phys(t + 32), Layout.StackTop(n) - Layout.StackBytes);
            m.Memory.WriteU64(Phys(t + 40), Layout.StackTop(n));
            m.Memory.WriteU64(Phys(t + 120), n + 1 < Vcpus ? t + Layout.ThreadStride : 0);
        }
    }
}

/// <summary>Emits a <see cref="GuestProgram"/>: the worker, its functions, the #PF and timer handlers.</summary>
public sealed class ProgramBuilder
{
    /// <summary>
    /// The probe vector: interrupts a run's host plan raises at chosen instruction boundaries (its
    /// handler is position-independent, like the timer's, so the final state does not depend on
    /// where it lands). Priority class 3, above the timer's: it can nest inside an interruptible timer handler.
    /// </summary>
    public const int TimerVector = 32, ProbeVector = 48, PageFaultVector = 14;
    private const uint MsrEoi = 0x80B;

    internal readonly RingZeroGuest Guest = new(inKernelAlias: true);
    public Assembler A => Guest.A;
    private readonly Queue<(Label Label, Action<ProgramBuilder> Body)> functions = new();
    private readonly List<(Label Fault, Label Fixup)> fixups = [];
    private readonly List<(ulong Offset, Label Target)> pointers = [];
    private readonly List<(int Instruction, string Text)> comments = [];
    private readonly Dictionary<ulong, Label> bound = [];
    private (Label Start, Label End) exceptionFixup;
    private readonly SortedDictionary<ulong, (int Group, int Index)> farFunctions = [];

    /// <summary>
    /// The address of far function j of an alias group (emitted once, at its fixed address outside
    /// the main code): it adds a group- and index-specific amount to the alias cell and returns.
    /// </summary>
    internal ulong AliasFunction(int group, int j)
    {
        ulong at = Layout.AliasFunction(group, j);
        farFunctions[at] = (group, j);
        return at;
    }

    /// <summary>Far functions' bytes, each assembled at its own address.</summary>
    private List<(ulong Address, byte[] Bytes)> AssembleFar() => farFunctions.Select(f =>
    {
        var a = new Assembler(64);
        a.add(__qword_ptr[r15 + Layout.AliasCell], f.Value.Group * 8 + f.Value.Index + 1);
        a.ret();
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), f.Key);
        return (f.Key, ms.ToArray());
    }).ToList();

    /// <summary>Binds a label here, keeping the bound copy (for label addresses: pointers, fixups).</summary>
    public void Bind(ref Label l)
    {
        A.Label(ref l);
        bound[l.Id] = l;
    }

    /// <summary>A function emitted after the worker; body must end it (ret or a tail jump).</summary>
    public Label Function(Action<ProgramBuilder> body)
    {
        var l = A.CreateLabel();
        functions.Enqueue((l, body));
        return l;
    }

    public ProgramBuilder Body(IEnumerable<Piece> pieces)
    {
        foreach (var p in pieces) p.Emit(this);
        return this;
    }

    public void Ret() => A.ret();

    internal void Fixup(Label fault, Label fixup) => fixups.Add((fault, fixup));

    /// <summary>
    /// A fresh private-page word that holds target's address in every vCPU's page (written at load):
    /// its offset, or null when the slots are used up (the caller then emits a direct form).
    /// </summary>
    internal ulong? PointerTo(Label target)
    {
        if (pointers.Count == Layout.PointerSlots) return null;
        ulong offset = (ulong)(Layout.Pointers + pointers.Count * 8);
        pointers.Add((offset, target));
        return offset;
    }

    /// <summary>Two adjacent fresh slots (a switch table), or null.</summary>
    internal ulong? TableOf(Label first, Label second)
    {
        if (pointers.Count + 2 > Layout.PointerSlots) return null;
        ulong at = PointerTo(first)!.Value;
        PointerTo(second);
        return at;
    }

    internal void Jcc(ConditionCode cc, Label l)
    {
        switch (cc)
        {
            case ConditionCode.o: A.jo(l); break; case ConditionCode.no: A.jno(l); break;
            case ConditionCode.b: A.jb(l); break; case ConditionCode.ae: A.jae(l); break;
            case ConditionCode.e: A.je(l); break; case ConditionCode.ne: A.jne(l); break;
            case ConditionCode.be: A.jbe(l); break; case ConditionCode.a: A.ja(l); break;
            case ConditionCode.s: A.js(l); break; case ConditionCode.ns: A.jns(l); break;
            case ConditionCode.p: A.jp(l); break; case ConditionCode.np: A.jnp(l); break;
            case ConditionCode.l: A.jl(l); break; case ConditionCode.ge: A.jge(l); break;
            case ConditionCode.le: A.jle(l); break; default: A.jg(l); break;
        }
    }

    internal static bool Encodes(in Instruction ins) => Iced.Intel.Encoder.Create(64, new NullWriter()).TryEncode(ins, Layout.Code, out _, out _);

    private sealed class NullWriter : CodeWriter { public override void WriteByte(byte value) { } }

    /// <summary>A line for the listing before the next instruction (by index: Iced allows one label per instruction).</summary>
    private void Comment(string text) => comments.Add((A.Instructions.Count, text));

    public static GuestImage Build(GuestProgram p)
    {
        if (p.Vcpus is < 1 or > Layout.MaxVcpus) throw new ArgumentOutOfRangeException(nameof(p), $"1..{Layout.MaxVcpus} vCPUs (got {p.Vcpus})");
        var b = new ProgramBuilder();
        var a = b.A;
        var worker = a.CreateLabel("worker");
        b.Guest.EveryVcpuCalls(worker, p.Vcpus, Layout.Private);

        a.Label(ref worker);
        b.Comment("worker: r15 = this vCPU's private page");
        if (p.Timer is { } t)
        {
            b.Wrmsr(RingZeroGuest.MsrDivide, 0xB);                                 // divide by 1: one count per instruction
            b.Wrmsr(RingZeroGuest.MsrLvtTimer, TimerVector);                      // one-shot, vector 32
            b.Wrmsr(RingZeroGuest.MsrInitCount, (uint)Math.Max(1, t.Delay));
        }
        for (int i = 0; i < Pool.Numbers.Length; i++) a.mov(new AssemblerRegister64(Pool.Gpr(Pool.Numbers[i], 8)), p.Registers[i]);
        // Kernel code runs with interrupts on: timer ticks and the host plan's probes arrive anywhere.
        a.sti();
        b.Comment("pieces");
        int start = a.Instructions.Count;
        foreach (var piece in p.Pieces) piece.Emit(b);
        int pieceInstructions = a.Instructions.Count - start;
        b.Comment("end: wait for the ticks and probes, save registers and flags");
        {
            // Test and halt with interrupts off, then sti; hlt (sti's shadow: an interrupt cannot
            // land between the test and the hlt, which would halt for good).
            var wait = a.CreateLabel(); var sleep = a.CreateLabel(); var done = a.CreateLabel();
            a.Label(ref wait);
            a.cli();
            if (p.Timer is { } timer)
            {
                a.cmp(__qword_ptr[r15 + Layout.Ticks], timer.Ticks);
                a.jb(sleep);
            }
            a.mov(r14, __qword_ptr[r15 + Layout.ProbesExpected]);
            a.cmp(__qword_ptr[r15 + Layout.Probes], r14);
            a.jae(done);
            a.Label(ref sleep);
            a.sti();
            a.hlt();
            a.jmp(wait);
            a.Label(ref done);
            a.nop();
        }
        for (int g = 0; g < 16; g++)
            if (g != 4) a.mov(__qword_ptr[r15 + Layout.SaveArea + g * 8], new AssemblerRegister64(Register.RAX + g));
        a.pushfq();
        a.pop(r14);
        a.mov(__qword_ptr[r15 + Layout.SavedFlags], r14);
        a.ret();

        start = a.Instructions.Count;
        b.EmitFunctions();
        pieceInstructions += a.Instructions.Count - start;
        b.PageFaultHandler();
        b.ProbeHandler();
        if (p.Timer is { } tp) b.TimerHandler(tp);

        var image = b.Guest.Assemble();
        if ((ulong)image.Length > Layout.AliasStride)
            throw new InvalidOperationException($"the generated program's code is {image.Length} bytes, over the {Layout.AliasStride} below the jumptable aliases (fewer or smaller pieces)");
        var far = b.AssembleFar();
        var consts = new ulong[Layout.ConstantWords];
        var r = new Rng(0xC0FFEE);
        for (int i = 0; i < consts.Length; i++) consts[i] = r.NextU64() >> (i % 4 * 16);
        return new GuestImage
        {
            Guest = b.Guest, Fixups = b.fixups, Pointers = b.pointers, Bound = b.bound, Vcpus = p.Vcpus, Constants = consts, ExceptionFixup = b.exceptionFixup, Far = far,
            Listing = Listing.Of(image, b.comments, p, far), Instructions = Listing.Count(image) + far.Sum(f => Listing.Count(f.Bytes, f.Address)),
            PieceInstructions = pieceInstructions + far.Sum(f => Listing.Count(f.Bytes, f.Address)),
        };
    }

    private void Wrmsr(uint msr, uint value)
    {
        A.mov(ecx, msr);
        A.mov(eax, value);
        A.xor(edx, edx);
        A.wrmsr();
    }

    /// <summary>
    /// #PF (error code pushed): the second push writes the frame's redundant slot (24 bytes below
    /// the saved RIP, kernel contract section 2) before any branch, as the DBT's entry path needs.
    /// Looks the faulting RIP up with exception_fixup, resumes at the fixup, or exits NoFixupStatus
    /// when no table has it.
    /// </summary>
    private void PageFaultHandler()
    {
        var a = A;
        Guest.Handler(PageFaultVector);
        Comment("#PF handler");
        a.push(rax);                       // saved rax
        a.push(rax);                       // the redundant slot
        a.push(rbx);
        a.push(rcx);
        a.mov(rax, __qword_ptr[rsp + 40]); // the faulting RIP
        var lookup = a.CreateLabel(); var none = a.CreateLabel();
        a.call(lookup);
        a.test(rax, rax);
        a.jz(none);
        a.mov(__qword_ptr[rsp + 40], rax);
        a.inc(__qword_ptr[r15 + Layout.Faults]);
        a.pop(rcx);
        a.pop(rbx);
        a.add(rsp, 8);                     // the slot
        a.pop(rax);
        a.add(rsp, 8);                     // the error code
        a.iretq();
        a.Label(ref none);
        a.mov(eax, Layout.NoFixupStatus);
        a.@out(0xF4, eax);
        a.hlt();

        // exception_fixup(rax = rip) -> rax = fixup or 0 (clobbers rbx, rcx): the DBT's table
        // (boot-info offsets 48/56) first, then the kernel's. As in the guest kernel (kernel
        // contract section 3) it is a function of its own, exported as a sized symbol: the DBT
        // never parks a vCPU for a flush inside it (a flush empties the DBT's table under the
        // scan: a match just made would read the fixup of an emptied entry).
        Comment("exception_fixup");
        Bind(ref lookup);
        var builtin = a.CreateLabel(); var scan1 = a.CreateLabel(); var scan2 = a.CreateLabel(); var found = a.CreateLabel(); var miss = a.CreateLabel();
        a.mov(rbx, __qword_ptr[BootLayout.BootInfo + 48]);
        a.mov(rcx, __qword_ptr[BootLayout.BootInfo + 56]);
        a.test(rbx, rbx);
        a.jz(builtin);
        a.Label(ref scan1);
        a.test(rcx, rcx);
        a.jz(builtin);
        // Entries are appended in order (a fixup, then its RIP): the first empty one ends the table.
        // A full scan of the 256 slots for every native-RIP fault (after a switchoff) made such runs
        // 16 times longer than native and over the instruction budget.
        a.cmp(__qword_ptr[rbx], 0);
        a.je(builtin);
        a.cmp(__qword_ptr[rbx], rax);
        a.je(found);
        a.add(rbx, 16);
        a.dec(rcx);
        a.jmp(scan1);
        a.Label(ref builtin);
        a.mov(rbx, Layout.ExTable);
        a.mov(ecx, Layout.ExTableMax);
        a.Label(ref scan2);
        a.test(rcx, rcx);
        a.jz(miss);
        a.cmp(__qword_ptr[rbx], rax);
        a.je(found);
        a.add(rbx, 16);
        a.dec(rcx);
        a.jmp(scan2);
        a.Label(ref found);
        a.mov(rax, __qword_ptr[rbx + 8]);
        a.ret();
        a.Label(ref miss);
        a.xor(eax, eax);
        a.ret();
        var end = a.CreateLabel();
        Bind(ref end);
        a.nop();
        exceptionFixup = (lookup, end);
    }

    /// <summary>The timer: counts the tick, makes an indirect call, re-arms until its last tick, EOI.</summary>
    private void TimerHandler(TimerPlan t) =>
        InterruptHandler(TimerVector, "timer handler", Layout.Ticks, cellAdd: 3, nest: t.Nest, body: a =>
        {
            var last = a.CreateLabel();
            a.cmp(__qword_ptr[r15 + Layout.Ticks], t.Ticks);
            a.jae(last);
            Wrmsr(RingZeroGuest.MsrInitCount, (uint)Math.Max(1, t.Period));
            a.Label(ref last);
        });

    /// <summary>The probe: counts itself, makes an indirect call, EOI.</summary>
    private void ProbeHandler() => InterruptHandler(ProbeVector, "probe handler", Layout.Probes, cellAdd: 5, nest: false, body: null);

    /// <summary>
    /// An interrupt handler (no error code: the third push is the frame's redundant slot, written
    /// before any branch): counts itself in its cell, makes an indirect call (a jumptable miss the
    /// first time: the dispatcher overwrites tx-nextpc-loc) to a function that adds cellAdd to the
    /// handlers' cell, runs body, EOI, returns. nest: interrupts on from after the pushes to before
    /// the EOI. Neither the count nor the cell depends on where the interrupt lands.
    /// </summary>
    private void InterruptHandler(int vector, string name, int counter, int cellAdd, bool nest, Action<Assembler>? body)
    {
        var a = A;
        Guest.Handler(vector);
        Comment(name);
        a.push(rax);
        a.push(rcx);
        a.push(rax);                       // the redundant slot
        a.push(rdx);
        if (nest) a.sti();
        a.inc(__qword_ptr[r15 + counter]);
        var target = Function(f => { f.A.add(__qword_ptr[r15 + Layout.HandlerCell], cellAdd); f.A.ret(); });
        a.lea(rax, __[target]);
        a.call(rax);
        body?.Invoke(a);
        if (nest) a.cli();
        Wrmsr(MsrEoi, 0);
        a.pop(rdx);
        a.add(rsp, 8);
        a.pop(rcx);
        a.pop(rax);
        a.iretq();
        EmitFunctions();
    }

    private void EmitFunctions()
    {
        while (functions.TryDequeue(out var f))
        {
            var l = f.Label;
            Bind(ref l);
            f.Body(this);
        }
    }
}
