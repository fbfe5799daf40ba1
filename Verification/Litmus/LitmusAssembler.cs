using System.Globalization;
using System.Reflection;
using Iced.Intel;

namespace Harness.Verification.Litmus;

/// <summary>
/// Turns a litmus thread's instruction column into machine code with Iced's Assembler. The
/// instruction forms are Iced's (the overload of Assembler.&lt;mnemonic&gt; whose parameter types fit
/// the operands is looked up by reflection), so any integer instruction Iced assembles with
/// register, memory, immediate or label operands works; the runner only lists the mnemonics it
/// admits and translates herd's two syntaxes (Intel `MOV [x],$1`, AT&amp;T `movq $1,(x)`) into
/// operands. Locations are absolute addresses.
/// </summary>
public static class LitmusAssembler
{
    // Mnemonics a litmus thread may use: data moves, ALU (for dependencies and RMWs), fences,
    // locked RMWs and branches. System instructions are not admitted: the test runs in ring 0 and
    // could stop the machine.
    private static readonly HashSet<string> Admitted =
    [
        "mov", "movzx", "movsx", "movsxd", "add", "sub", "and", "or", "xor", "adc", "sbb", "cmp", "test", "inc", "dec", "neg", "not",
        "shl", "shr", "sar", "lea", "xchg", "xadd", "cmpxchg", "mfence", "lfence", "sfence", "nop", "pause",
        "jmp", "je", "jne", "jz", "jnz", "jl", "jle", "jg", "jge", "jb", "jbe", "ja", "jae", "js", "jns",
    ];

    // AT&T size suffixes, and the mnemonics whose last letter is not one.
    private static readonly Dictionary<char, int> Suffix = new() { ['b'] = 1, ['w'] = 2, ['l'] = 4, ['q'] = 8 };

    /// <summary>Assembled thread code: its bytes at Address, the test's first instruction at Start (after the prologue), its end at End (before the epilogue).</summary>
    public sealed record Code(byte[] Bytes, ulong Address, ulong Start, ulong End, IReadOnlyList<(ulong Address, LitmusInstruction Source)> Map);

    /// <summary>
    /// Assembles thread's code at address, between an optional prologue and epilogue (code the
    /// runner adds around the test: register set-up, a done count).
    /// </summary>
    public static Code Assemble(LitmusTest test, LitmusThread thread, ulong address, Func<string, ulong> addressOf,
        Action<Assembler>? prologue = null, Action<Assembler>? epilogue = null)
    {
        var a = new Assembler(64);
        prologue?.Invoke(a);
        // Instruction indices, not labels, mark positions: Iced allows one label per instruction,
        // and a test's own label may sit on the same one.
        int begin = a.Instructions.Count;
        var labels = new Dictionary<string, Label>(StringComparer.Ordinal);
        Label LabelOf(string n) => labels.TryGetValue(n, out var l) ? l : labels[n] = a.CreateLabel(n);
        var defined = new HashSet<string>();
        var starts = new List<(int Index, LitmusInstruction Source)>();
        foreach (var ins in thread.Code)
        {
            string text = ins.Text.Trim();
            // Labels: 'L0:' alone or before an instruction.
            int colon = text.IndexOf(':');
            if (colon > 0 && LitmusParser.IsIdentifier(text[..colon]) && !text[..colon].Contains(' '))
            {
                string name = text[..colon];
                if (!defined.Add(name)) throw Error(test, ins, $"label '{name}' defined twice in P{thread.Index}");
                var l = LabelOf(name);
                try { a.Label(ref l); }
                catch (ArgumentException e) { throw Error(test, ins, $"label '{name}': {e.Message} (two labels on one instruction?)"); }
                text = text[(colon + 1)..].Trim();
                if (text.Length == 0) continue;
            }
            starts.Add((a.Instructions.Count, ins));
            Emit(a, test, ins, text, LabelOf, addressOf);
        }
        foreach (var used in labels.Keys)
            if (!defined.Contains(used)) throw new LitmusException(test.File, thread.Code[0].Line, 1, $"P{thread.Index} jumps to label '{used}', which it does not define");
        int end = a.Instructions.Count;
        if (epilogue is null) a.nop(); // the end label needs an instruction; the runner stops the thread here
        else epilogue(a);
        var writer = new CodeWriterImpl();
        AssemblerResult result;
        try { result = a.Assemble(writer, address, BlockEncoderOptions.ReturnNewInstructionOffsets); }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException)
        {
            throw new LitmusException(test.File, thread.Code.Count > 0 ? thread.Code[0].Line : 0, 1, $"P{thread.Index} does not assemble: {e.Message}");
        }
        var offsets = result.Result[0].NewInstructionOffsets;
        ulong At(int index) => address + offsets[index];
        var map = starts.Select(s => (At(s.Index), s.Source)).ToArray();
        return new Code(writer.ToArray(), address, At(begin), At(end), map);
    }

    private static void Emit(Assembler a, LitmusTest test, LitmusInstruction ins, string text, Func<string, Label> label, Func<string, ulong> addressOf)
    {
        bool att = test.Syntax == LitmusSyntax.Att;
        var words = text.Replace(";", " ").Split((char[])[' ', '\t'], 2, StringSplitOptions.RemoveEmptyEntries);
        bool locked = false;
        if (words.Length > 0 && words[0].Equals("lock", StringComparison.OrdinalIgnoreCase))
        {
            locked = true;
            words = words.Length > 1 ? words[1].Trim().Split((char[])[' ', '\t'], 2, StringSplitOptions.RemoveEmptyEntries) : [];
        }
        if (words.Length == 0) throw Error(test, ins, "'lock' without an instruction");
        string mnemonic = words[0].ToLowerInvariant();
        int? suffixSize = null;
        if (!Admitted.Contains(mnemonic) && att && mnemonic.Length > 1 && Suffix.TryGetValue(mnemonic[^1], out int sz) && Admitted.Contains(mnemonic[..^1]))
        {
            suffixSize = sz;
            mnemonic = mnemonic[..^1];
        }
        if (!Admitted.Contains(mnemonic))
            throw Error(test, ins, $"unsupported instruction '{words[0]}' (the runner admits {string.Join(", ", Admitted.Order())}, AT&T size suffixes and lock)");

        var texts = words.Length > 1 ? SplitOperands(words[1]) : [];
        if (att) texts.Reverse(); // AT&T: source first
        var ops = texts.Select(t => ParseOperand(test, ins, t, att, label, addressOf)).ToList();

        // Memory operand size: the suffix, an Intel 'QWORD PTR', the register operand's, or the test's default.
        int regSize = ops.FirstOrDefault(o => o.Register != Register.None).Register is var r && r != Register.None ? r.GetSize() : 0;
        int defaultSize = att ? 8 : 4;
        for (int k = 0; k < ops.Count; k++)
            if (ops[k].IsMemory)
            {
                int fromOperands = mnemonic is "movzx" or "movsx" or "movsxd" ? 0 : regSize;
                int size = suffixSize ?? ops[k].PtrSize ?? (fromOperands > 0 ? fromOperands : defaultSize);
                if (mnemonic is "movzx" or "movsx") size = ops[k].PtrSize ?? suffixSize ?? 1;
                ops[k] = ops[k] with { MemSize = size };
            }

        object target = locked ? a.@lock : a;
        var candidates = typeof(Assembler).GetMethods(BindingFlags.Public | BindingFlags.Instance)
            .Where(m => m.Name == mnemonic && m.GetParameters().Length == ops.Count).ToArray();
        foreach (var m in candidates)
        {
            var ps = m.GetParameters();
            var args = new object[ops.Count];
            bool fits = true;
            for (int k = 0; k < ops.Count && fits; k++) fits = ops[k].TryConvert(ps[k].ParameterType, out args[k]);
            if (!fits) continue;
            try { m.Invoke(target, args); }
            catch (TargetInvocationException e) { throw Error(test, ins, $"Iced cannot assemble '{text}': {e.InnerException?.Message}"); }
            return;
        }
        throw Error(test, ins, $"no form of '{mnemonic}' takes these operands: '{text}'");
    }

    /// <summary>An operand as parsed: a register, a memory reference, an immediate or a label.</summary>
    private readonly record struct Operand(Register Register, bool IsMemory, Register Base, Register Index, int Scale, long Disp,
        long? Immediate, Label? Target, int? PtrSize, int MemSize)
    {
        public bool TryConvert(Type t, out object value)
        {
            value = null!;
            if (Register != Register.None)
            {
                var v = AsmRegister(Register);
                if (v is null || v.GetType() != t) return false;
                value = v;
                return true;
            }
            if (IsMemory)
            {
                if (t != typeof(AssemblerMemoryOperand)) return false;
                var f = MemSize switch { 1 => AssemblerRegisters.__byte_ptr, 2 => AssemblerRegisters.__word_ptr, 4 => AssemblerRegisters.__dword_ptr, _ => AssemblerRegisters.__qword_ptr };
                if (Base == Register.None && Index == Register.None) { value = f[Disp]; return true; }
                AssemblerMemoryOperand? index = Index == Register.None ? null : new AssemblerRegister64(Index.GetFullRegister()) * Scale;
                AssemblerMemoryOperand mem = Base == Register.None ? index!.Value
                    : index is { } ix ? new AssemblerRegister64(Base.GetFullRegister()) + ix : new AssemblerRegister64(Base.GetFullRegister()) + 0;
                value = f[mem + Disp];
                return true;
            }
            if (Target is { } l)
            {
                if (t != typeof(Label)) return false;
                value = l;
                return true;
            }
            if (Immediate is { } imm)
            {
                try
                {
                    if (t == typeof(sbyte) && imm is >= sbyte.MinValue and <= sbyte.MaxValue) value = (sbyte)imm;
                    else if (t == typeof(byte) && imm is >= 0 and <= byte.MaxValue) value = (byte)imm;
                    else if (t == typeof(short) && imm is >= short.MinValue and <= short.MaxValue) value = (short)imm;
                    else if (t == typeof(ushort) && imm is >= 0 and <= ushort.MaxValue) value = (ushort)imm;
                    else if (t == typeof(int) && imm is >= int.MinValue and <= int.MaxValue) value = (int)imm;
                    else if (t == typeof(uint) && imm is >= 0 and <= uint.MaxValue) value = (uint)imm;
                    else if (t == typeof(long)) value = imm;
                    else if (t == typeof(ulong)) value = (ulong)imm;
                    else return false;
                    return true;
                }
                catch (OverflowException) { return false; }
            }
            return false;
        }
    }

    private static Operand ParseOperand(LitmusTest test, LitmusInstruction ins, string text, bool att, Func<string, Label> label, Func<string, ulong> addressOf)
    {
        string t = text.Trim();
        var none = new Operand(Register.None, false, Register.None, Register.None, 1, 0, null, null, null, 0);
        if (t.StartsWith('$'))
        {
            var v = LitmusParser.ParseValue(t) ?? throw Error(test, ins, $"cannot read the immediate '{t}'");
            return none with { Immediate = v.AddressOf is { } loc ? (long)Address(test, ins, loc, addressOf) : v.Constant };
        }
        if (LitmusParser.TryRegister(t, out var reg) && (!att || t.StartsWith('%'))) return none with { Register = reg };
        if (att ? t.Contains('(') : t.Contains('['))
            return att ? AttMemory(test, ins, t, none, addressOf) : IntelMemory(test, ins, t, none, addressOf);
        if (LitmusParser.IsIdentifier(t)) return none with { Target = label(t) };
        throw Error(test, ins, $"cannot read the operand '{t}'");
    }

    // disp(base,index,scale), disp a number, a location or location+number.
    private static Operand AttMemory(LitmusTest test, LitmusInstruction ins, string t, Operand none, Func<string, ulong> addressOf)
    {
        int open = t.IndexOf('('), close = t.LastIndexOf(')');
        if (close < open) throw Error(test, ins, $"cannot read the memory operand '{t}'");
        long disp = Displacement(test, ins, t[..open], addressOf);
        var parts = t[(open + 1)..close].Split(',', StringSplitOptions.TrimEntries);
        Register b = Register.None, x = Register.None;
        int scale = 1;
        if (parts.Length == 1 && LitmusParser.IsIdentifier(parts[0]) && !parts[0].StartsWith('%'))
            disp += (long)Address(test, ins, parts[0], addressOf); // herd's '(x)'
        else
        {
            if (parts[0].Length > 0) b = Reg(test, ins, parts[0]);
            if (parts.Length > 1 && parts[1].Length > 0)
            {
                if (LitmusParser.TryRegister(parts[1], out var xr)) x = xr;
                else if (LitmusParser.IsIdentifier(parts[1])) disp += (long)Address(test, ins, parts[1], addressOf); // '(x,%rax)'
                else throw Error(test, ins, $"cannot read the index '{parts[1]}'");
            }
            if (parts.Length > 2 && !int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out scale)) throw Error(test, ins, $"cannot read the scale '{parts[2]}'");
        }
        if (b == Register.RIP) b = Register.None; // 'x(%rip)': the location's absolute address
        if (x != Register.None && b == Register.None && scale == 1) (b, x) = (x, Register.None);
        return none with { IsMemory = true, Base = b, Index = x, Scale = scale, Disp = disp };
    }

    // [x], [EAX], [x+EAX], [EAX+4], 'DWORD PTR [x]'.
    private static Operand IntelMemory(LitmusTest test, LitmusInstruction ins, string t, Operand none, Func<string, ulong> addressOf)
    {
        int open = t.IndexOf('['), close = t.LastIndexOf(']');
        if (close < open) throw Error(test, ins, $"cannot read the memory operand '{t}'");
        string prefix = t[..open].Trim().ToUpperInvariant().Replace("PTR", "").Trim();
        int? ptr = prefix switch { "" => null, "BYTE" => 1, "WORD" => 2, "DWORD" => 4, "QWORD" => 8, _ => throw Error(test, ins, $"unknown size '{t[..open].Trim()}'") };
        Register b = Register.None, x = Register.None;
        long disp = 0;
        foreach (var term in t[(open + 1)..close].Replace("-", "+-").Split('+', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (LitmusParser.TryRegister(term, out var r)) { if (b == Register.None) b = r; else x = r; }
            else disp += Displacement(test, ins, term, addressOf);
        }
        return none with { IsMemory = true, Base = b, Index = x, Disp = disp, PtrSize = ptr };
    }

    private static long Displacement(LitmusTest test, LitmusInstruction ins, string s, Func<string, ulong> addressOf)
    {
        s = s.Trim();
        if (s.Length == 0) return 0;
        long total = 0;
        foreach (var term in s.Replace("-", "+-").Split('+', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var v = LitmusParser.ParseValue(term.TrimStart('-')) ?? throw Error(test, ins, $"cannot read the displacement '{s}'");
            long x = v.AddressOf is { } loc ? (long)Address(test, ins, loc, addressOf) : v.Constant;
            total += term.StartsWith('-') ? -x : x;
        }
        return total;
    }

    private static ulong Address(LitmusTest test, LitmusInstruction ins, string loc, Func<string, ulong> addressOf)
    {
        if (test.Locations.All(l => l.Name != loc)) throw Error(test, ins, $"unknown location '{loc}' (not in the init block or the condition)");
        return addressOf(loc);
    }

    private static Register Reg(LitmusTest test, LitmusInstruction ins, string s) =>
        LitmusParser.TryRegister(s, out var r) ? r : throw Error(test, ins, $"'{s}' is not a general-purpose register");

    private static readonly Dictionary<Register, object> AsmRegisters = typeof(AssemblerRegisters)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Where(f => f.FieldType.Name.StartsWith("AssemblerRegister", StringComparison.Ordinal) && f.FieldType.GetField("Value")?.FieldType == typeof(Register))
        .Select(f => f.GetValue(null)!)
        .Select(v => (Reg: (Register)v.GetType().GetField("Value")!.GetValue(v)!, Value: v))
        .GroupBy(p => p.Reg).ToDictionary(g => g.Key, g => g.First().Value);

    private static object? AsmRegister(Register r) => AsmRegisters.GetValueOrDefault(r);

    private static List<string> SplitOperands(string s)
    {
        var list = new List<string>();
        int depth = 0, start = 0;
        for (int k = 0; k < s.Length; k++)
        {
            if (s[k] is '(' or '[') depth++;
            else if (s[k] is ')' or ']') depth--;
            else if (s[k] == ',' && depth == 0) { list.Add(s[start..k].Trim()); start = k + 1; }
        }
        if (s[start..].Trim().Length > 0) list.Add(s[start..].Trim());
        return list;
    }

    private static LitmusException Error(LitmusTest test, LitmusInstruction ins, string message) =>
        new(test.File, ins.Line, ins.Column, message);

    private sealed class CodeWriterImpl : CodeWriter
    {
        private readonly List<byte> bytes = [];
        public override void WriteByte(byte value) => bytes.Add(value);
        public byte[] ToArray() => [.. bytes];
    }
}
