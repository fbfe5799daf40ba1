using System.Text;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>Native and translated assembly of one block, side by side in reading order (diagnostics and golden files).</summary>
public static unsafe class BlockListing
{
    public static string Format(Machine.Machine machine, CodeCache.CodeCache cache, TranslatedBlock b, ulong mark = 0, bool addresses = true)
    {
        var sb = new StringBuilder();
        string entry = b.EntrySlotDelta is int d ? $" (interrupt entry, slot at rsp{d:+#;-#;+0})" : "";
        sb.AppendLine(addresses
            ? $"block native 0x{b.NativeStart:x}..0x{b.NativeEnd:x} ({b.NativeInstructions} insns) -> cache 0x{b.CacheStart:x} ({b.CacheLength} bytes){entry}"
            : $"block ({b.NativeInstructions} native insns, {b.NativeEnd - b.NativeStart} bytes -> {b.CacheLength} bytes){entry}");
        var code = new byte[b.CacheLength];
        for (int i = 0; i < code.Length; i++) code[i] = machine.Memory.Base[cache.ToPhys(b.CacheStart) + (ulong)i];
        var dec = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code), b.CacheStart);
        var fmt = new GasFormatter();
        fmt.Options.FirstOperandCharIndex = 8;
        var output = new StringOutput();
        while (dec.IP < b.CacheStart + (ulong)code.Length)
        {
            dec.Decode(out var ins);
            fmt.Format(ins, output);
            string text = output.ToStringAndReset();
            if (!addresses) text = Relative(ins, text, b.CacheStart);
            sb.Append(ins.IP == mark || (mark > ins.IP && mark < ins.NextIP) ? "=> " : "   ");
            if (addresses) sb.Append($"{ins.IP:x}: ");
            else sb.Append($"+{ins.IP - b.CacheStart:x3}: ");
            sb.AppendLine(text);
        }
        return sb.ToString();
    }

    // Golden files must not depend on where a block landed in the cache: branch targets print relative.
    private static string Relative(in Instruction ins, string text, ulong start)
    {
        if (ins.FlowControl is FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch or FlowControl.Call && ins.Op0Kind == OpKind.NearBranch64)
        {
            ulong t = ins.NearBranch64;
            return $"{ins.Mnemonic.ToString().ToLowerInvariant()} <{(t >= start && t < start + 0x10000 ? $"+{t - start:x}" : "out")}>";
        }
        return text;
    }
}
