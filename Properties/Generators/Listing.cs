using System.Text;
using Iced.Intel;

namespace Harness.Properties.Generators;

/// <summary>A generated program as readable assembly (GNU syntax, addresses, the program's sections), for failure messages.</summary>
public static class Listing
{
    private static readonly GasFormatter formatter = new() { Options = { FirstOperandCharIndex = 8 } };

    public static string Format(in Instruction ins)
    {
        var o = new StringOutput();
        lock (formatter) formatter.Format(ins, o);
        return o.ToStringAndReset();
    }

    private static IEnumerable<Instruction> Decode(byte[] code, ulong at = Layout.Code)
    {
        var d = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code), at);
        while (d.IP < at + (ulong)code.Length)
        {
            d.Decode(out var ins);
            yield return ins;
        }
    }

    public static int Count(byte[] code, ulong at = Layout.Code) => Decode(code, at).Count();

    internal static string Of(byte[] code, List<(int Instruction, string Text)> comments, GuestProgram p, List<(ulong Address, byte[] Bytes)> far)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"; {p.Vcpus} vCPU(s), {p.Pieces.Count} piece(s){(p.Timer is { } t ? $"; {t}" : "")}");
        sb.AppendLine($"; registers: {string.Join(' ', Pool.Numbers.Select((n, i) => $"{Pool.Gpr(n, 8).ToString().ToLowerInvariant()}={p.Registers[i]:x}"))}");
        int k = 0, c = 0;
        foreach (var ins in Decode(code))
        {
            while (c < comments.Count && comments[c].Instruction == k) sb.AppendLine($"; {comments[c++].Text}");
            sb.AppendLine($"  {ins.IP:x16}  {Format(ins)}");
            k++;
        }
        if (far.Count > 0) sb.AppendLine("; far functions (aliased in the jumptable)");
        foreach (var (at, bytes) in far)
            foreach (var ins in Decode(bytes, at)) sb.AppendLine($"  {ins.IP:x16}  {Format(ins)}");
        return sb.ToString();
    }
}
