using Harness.Dbt.Cache;
using Harness.Smp;
using System.Text;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// Stable names for the addresses a listing mentions, so that a listing does not change when the
/// kernel is rebuilt with other addresses or a block lands elsewhere in the cache (golden files:
/// Dbt/Reports/GoldenBlocks.cs).
/// </summary>
public interface IListingNames
{
    /// <summary>A name for an address outside the block being listed (kernel symbol+offset, a cache stub, another block), or null.</summary>
    string? Name(ulong address);

    /// <summary>A remark for the translated instruction at a cache address (an exception-table registration), or null.</summary>
    string? Note(ulong cacheAddress) => null;
}

/// <summary>Translated assembly of one block in reading order (diagnostics and golden files).</summary>
public static unsafe class BlockListing
{
    /// <summary>
    /// addresses: false prints offsets from the block start instead of cache addresses, and branch
    /// targets relative to the block; names, if given, then names every other address the code
    /// mentions (branch targets, immediates, memory displacements).
    /// </summary>
    public static string Format(Machine machine, CodeCache cache, TranslatedBlock b, ulong mark = 0, bool addresses = true, IListingNames? names = null)
    {
        var sb = new StringBuilder();
        string entry = b.EntrySlotDelta is int d ? $" (interrupt entry, slot at rsp{d:+#;-#;+0})" : "";
        string? start = addresses ? null : names?.Name(b.NativeStart);
        sb.AppendLine(addresses
            ? $"block native 0x{b.NativeStart:x}..0x{b.NativeEnd:x} ({b.NativeInstructions} insns) -> cache 0x{b.CacheStart:x} ({b.CacheLength} bytes){entry}"
            : $"block {(start is null ? "" : start + " ")}({b.NativeInstructions} native insns, {b.NativeEnd - b.NativeStart} bytes -> {b.CacheLength} bytes){entry}");
        var code = new byte[b.CacheLength];
        for (int i = 0; i < code.Length; i++) code[i] = machine.Memory.Base[cache.ToPhys(b.CacheStart) + (ulong)i];
        var dec = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code), b.CacheStart);
        var resolver = addresses || names is null ? null : new Resolver(names, b);
        var fmt = new GasFormatter(resolver);
        fmt.Options.FirstOperandCharIndex = 8;
        fmt.Options.UppercaseHex = false;
        var output = new StringOutput();
        while (dec.IP < b.CacheStart + (ulong)code.Length)
        {
            dec.Decode(out var ins);
            fmt.Format(ins, output);
            string text = output.ToStringAndReset();
            if (!addresses) text = Relative(ins, text, b, names);
            sb.Append(ins.IP == mark || (mark > ins.IP && mark < ins.NextIP) ? "=> " : "   ");
            if (addresses) sb.Append($"{ins.IP:x}: ");
            else sb.Append($"+{ins.IP - b.CacheStart:x3}: ");
            sb.Append(text);
            if (!addresses && names?.Note(ins.IP) is { } note) sb.Append("   # ").Append(note);
            sb.AppendLine();
        }
        return sb.ToString();
    }

    // Golden files must not depend on where a block landed in the cache: branch targets print relative.
    private static string Relative(in Instruction ins, string text, TranslatedBlock b, IListingNames? names)
    {
        if (ins.FlowControl is FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch or FlowControl.Call && ins.Op0Kind == OpKind.NearBranch64)
        {
            ulong t = ins.NearBranch64, start = b.CacheStart;
            string where = t - start < (ulong)b.CacheLength ? $"+{t - start:x}"
                : names?.Name(t) ?? (t >= start && t < start + 0x10000 ? $"+{t - start:x}" : "out");
            return $"{ins.Mnemonic.ToString().ToLowerInvariant()} <{where}>";
        }
        return text;
    }

    /// <summary>Names immediates and displacements: block-relative inside the block, else through the caller's names.</summary>
    private sealed class Resolver(IListingNames names, TranslatedBlock b) : ISymbolResolver
    {
        public bool TryGetSymbol(in Instruction instruction, int operand, int instructionOperand, ulong address, int addressSize, out SymbolResult symbol)
        {
            if (addressSize == 4 && instruction.GetOpKind(operand) is OpKind.Immediate32to64 or OpKind.Memory) address = (ulong)(long)(int)address;
            string? name = address - b.CacheStart < (ulong)b.CacheLength ? $"<+{address - b.CacheStart:x}>" : names.Name(address) is { } n ? $"<{n}>" : null;
            symbol = name is null ? default : new SymbolResult(address, name);
            return name is not null;
        }
    }
}
