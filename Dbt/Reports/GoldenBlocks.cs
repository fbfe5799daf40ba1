using System.Text;
using Iced.Intel;

namespace Harness.Dbt.Reports;

/// <summary>
/// The translations of a few representative kernel blocks as stable text (tests/Dbt.Tests/Golden/),
/// so that a rule change shows up as a diff in review, like FEX's instruction-count CI. Each golden
/// starts from a fresh <see cref="StaticTranslation"/> (so no earlier translation decides whether a
/// branch goes to an edge or straight to a block), translates one root, and lists every block that
/// root produced: the native instructions, then the translation (<see cref="Translate.BlockListing"/>
/// without addresses), then the exception-table registrations. Kernel addresses print as
/// symbol+offset and cache addresses by role, so neither a kernel rebuild that moves code nor a
/// change in cache layout changes a golden, while any change in what a rule emits does.
/// </summary>
public static class GoldenBlocks
{
    /// <summary>One golden: Image is the image under guest/build/ it translates (the guest kernel unless said).</summary>
    public sealed record Golden(string Name, string What, bool NoCallRet, Func<StaticTranslation, ulong> Root, string Image = Golden.KernelImage)
    {
        public const string KernelImage = "kernel/kernel.elf";
    }

    public static readonly IReadOnlyList<Golden> All =
    [
        new("isr-timer-gate", "the shadow IDT's translation of the timer vector (32, no error code): the stub and isr_common in entry mode up to the save of tx-nextpc-loc into the frame's redundant slot, then isr_dispatch's call and isr_exit's iretq restore",
            false, t => t.TranslateGate(Symbol(t, "isr_stubs") + 32 * 16, 32)),
        new("isr-page-fault-gate", "the same path for #PF (14), whose CPU-pushed error code puts the redundant slot 8 bytes closer to RSP",
            false, t => t.TranslateGate(Symbol(t, "isr_stubs") + 14 * 16, 14)),
        new("isr-exit", "isr_exit reached by ret_to_user's jmp: register pops, swapgs test, the iretq rule (tx-nextpc-loc restored on returns to kernel mode)",
            false, t => t.Translate(Symbol(t, "isr_exit"))),
        new("syscall-entry", "the LSTAR target: the syscall frame build, the direct call to syscall_dispatch (call/ret identity), sysretq",
            false, t => t.Translate(Symbol(t, "syscall_entry"))),
        new("syscall-dispatch", "a C function with an indirect call through the syscall table: the inline jumptable lookup (register form) under cli with a code-cache return address",
            false, t => t.Translate(Symbol(t, "syscall_dispatch"))),
        new("syscall-dispatch.no-callret", "syscall_dispatch under no-callret: native return addresses pushed, ret through the jumptable",
            true, t => t.Translate(Symbol(t, "syscall_dispatch"))),
        new("switch-jump", "the first switch-table jmp r/m64 of the kernel (fmt_format's conversion switch): target loaded into RAX with the native operand, jumptable lookup (memory form), no continuation",
            false, t => t.Translate(FirstIndirectJmpBlock(t))),
        new("copy-user", "__copy_user's faultable rep movsb: the copy's cache address registered with the translation of its fixup",
            false, t => t.Translate(Symbol(t, "__copy_user"))),
        new("syscall-init-cpu", "wrmsr: the inline ECX check that sends LSTAR and GS base to call-outs and every other MSR straight through",
            false, t => t.Translate(Symbol(t, "syscall_init_cpu"))),
        new("gdt-load", "lgdt (identity), a RIP-relative lea re-encoded for the cache, and lretq as a call-out",
            false, t => t.Translate(Symbol(t, "gdt_load"))),
        new("bmi2-identity", "the bits sample's bmi2() as gcc -march=x86-64-v3 emits it: pdep pext bzhi shlx shrx sarx rorx mulx, all by identity",
            false, t => t.Translate(Symbol(t, "bmi2")), Image: "samples/bits.elf"),
    ];

    public const string UpdateVariable = "HARNESS_UPDATE_GOLDEN";

    /// <summary>The golden text of g for the kernel image elf; options adds planted variants (the configuration comes from g).</summary>
    public static string Render(Golden g, byte[] elf, string name, DbtOptions? options = null)
    {
        var o = options ?? DbtOptions.Default;
        o = new DbtOptions
        {
            CallRet = !g.NoCallRet, MaxBlockInstructions = o.MaxBlockInstructions, PerCpuOffset = o.PerCpuOffset,
            PlantedLookupWithInterrupts = o.PlantedLookupWithInterrupts, PlantedNoTxNextPcRestore = o.PlantedNoTxNextPcRestore,
        };
        using var t = new StaticTranslation(elf, name, o);
        ulong root = g.Root(t);
        var extable = t.ExceptionEntries();
        var names = new ListingNames(t.Dbt, t.Symbols, extable);
        var sb = new StringBuilder();
        sb.AppendLine($"# {g.Name}: {g.What}");
        sb.AppendLine($"# configuration {(g.NoCallRet ? "no-callret" : "default")}, root <{names.Name(root)}>; every block the root produced, native then translated");
        sb.AppendLine($"# regenerate: {UpdateVariable}=1 dotnet test tests/Dbt.Tests -c Release --filter FullyQualifiedName~Golden (docs/dbt.md)");
        foreach (var b in t.Dbt.Translator.Blocks)
        {
            sb.AppendLine();
            sb.AppendLine($"native {names.Native(b.NativeStart)}:");
            var native = Decode(t, b.NativeStart, b.NativeEnd).Select(i => (Where: names.Native(i.IP) + ":", Text: FormatNative(i, t.Symbols))).ToList();
            int width = native.Max(n => n.Where.Length);
            foreach (var (where, text) in native) sb.AppendLine($"   {where.PadRight(width)} {text}");
            sb.Append(Translate.BlockListing.Format(t.Machine, t.Dbt.Cache, b, addresses: false, names: names));
        }
        if (extable.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("exception table (DBT's own, registered by the kernel at boot):");
            foreach (var (fault, fixup) in extable) sb.AppendLine($"   <{names.Name(fault)}> -> <{names.Name(fixup)}>");
        }
        return sb.ToString();
    }

    /// <summary>The golden file of g in a directory (tests/Dbt.Tests/Golden).</summary>
    public static string FileOf(string directory, Golden g) => Path.Combine(directory, g.Name + ".txt");

    private static ulong Symbol(StaticTranslation t, string name) =>
        t.Symbols.Address(name) ?? throw new InvalidOperationException($"the image has no symbol '{name}' (a golden's root)");

    /// <summary>
    /// The start of the block holding the kernel's first jmp r/m64: the nearest direct-branch target
    /// of its function at or before it (a place where a run would start a block), else the function.
    /// </summary>
    private static ulong FirstIndirectJmpBlock(StaticTranslation t)
    {
        foreach (var f in t.Symbols.Functions)
        {
            var code = Decode(t, f.Value, f.Value + f.Size).ToList();
            var jmp = code.FirstOrDefault(i => i.FlowControl == FlowControl.IndirectBranch);
            if (jmp.IsInvalid || jmp.Length == 0) continue;
            ulong start = f.Value;
            foreach (var i in code)
                if (i.FlowControl is FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch && i.Op0Kind == OpKind.NearBranch64
                    && i.NearBranch64 <= jmp.IP && i.NearBranch64 > start)
                    start = i.NearBranch64;
            return start;
        }
        throw new InvalidOperationException("the kernel has no indirect jmp (the switch-jump golden's root)");
    }

    internal static IEnumerable<Instruction> Decode(StaticTranslation t, ulong start, ulong end)
    {
        var bytes = new byte[end - start];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = t.Vcpu.Read8(start + (ulong)i);
        var d = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(bytes), start);
        while (d.IP < end)
        {
            d.Decode(out var ins);
            yield return ins;
        }
    }

    private static string FormatNative(in Instruction ins, KernelSymbols symbols)
    {
        var f = new GasFormatter(new NativeResolver(symbols));
        f.Options.FirstOperandCharIndex = 8;
        f.Options.UppercaseHex = false;
        var o = new StringOutput();
        f.Format(ins, o);
        return o.ToStringAndReset();
    }

    private sealed class NativeResolver(KernelSymbols symbols) : ISymbolResolver
    {
        public bool TryGetSymbol(in Instruction instruction, int operand, int instructionOperand, ulong address, int addressSize, out SymbolResult symbol)
        {
            if (addressSize == 4 && instruction.GetOpKind(operand) is OpKind.Immediate32to64 or OpKind.Memory) address = (ulong)(long)(int)address;
            string? name = symbols.Name(address);
            symbol = name is null ? default : new SymbolResult(address, $"<{name}>");
            return name is not null;
        }
    }
}
