using System.Globalization;
using System.Text;
using Iced.Intel;

namespace Harness.Verification.Litmus;

/// <summary>
/// Reads x86 litmus tests in the herd/litmus7 format: the `X86 NAME` / `X86_64 NAME` header, optional
/// quoted and key=value lines, the `{ ... }` init block, the `P0 | P1 ... ;` thread columns, an
/// optional `locations [...]` line and the `exists` / `~exists` / `forall` condition. `(* *)`
/// comments anywhere. Every error names the file, line, column and the token it stopped at.
/// </summary>
public static class LitmusParser
{
    public static LitmusTest ParseFile(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new LitmusException(path, 0, 0, $"cannot read: {e.Message}"); }
        return Parse(text, path);
    }

    public static LitmusTest Parse(string text, string file)
    {
        var lines = StripComments(text, file).Replace("\r", "").Split('\n');
        int i = 0;
        void SkipBlank() { while (i < lines.Length && lines[i].Trim().Length == 0) i++; }
        LitmusException Err(int line, int col, string msg) => new(file, line + 1, col + 1, msg);

        SkipBlank();
        if (i >= lines.Length) throw Err(0, 0, "empty file: expected a header such as 'X86_64 SB'");
        var header = lines[i].Trim().Split((char[])[' ', '\t'], 2, StringSplitOptions.RemoveEmptyEntries);
        LitmusSyntax syntax = header[0] switch
        {
            "X86_64" => LitmusSyntax.Att,
            "X86" => LitmusSyntax.Intel,
            _ => throw Err(i, Col(lines[i], header[0]), $"unsupported architecture '{header[0]}': this runner reads X86 and X86_64 tests"),
        };
        if (header.Length < 2) throw Err(i, lines[i].Length, "the header names no test");
        string name = header[1].Trim();
        i++;

        // Doc strings and key=value lines until the init block.
        while (i < lines.Length && !lines[i].TrimStart().StartsWith('{'))
        {
            string t = lines[i].Trim();
            if (t.Length > 0 && !t.StartsWith('"') && !t.Contains('='))
                throw Err(i, Col(lines[i], t), $"expected the init block '{{' but found '{Short(t)}'");
            i++;
        }
        if (i >= lines.Length) throw Err(lines.Length - 1, 0, "no init block '{ ... }'");

        // The init block, possibly on one line.
        int initLine = i;
        var init = new StringBuilder();
        var initLines = new List<(int Line, int Offset)>();
        string first = lines[i];
        int open = first.IndexOf('{');
        string rest = first[(open + 1)..];
        int closeAt;
        while (true)
        {
            closeAt = rest.IndexOf('}');
            initLines.Add((i, init.Length));
            if (closeAt >= 0) { init.Append(rest[..closeAt]); break; }
            init.Append(rest).Append('\n');
            i++;
            if (i >= lines.Length) throw Err(initLine, open, "the init block is not closed with '}'");
            rest = lines[i];
        }
        string afterInit = rest[(closeAt + 1)..].Trim();
        if (afterInit.Length > 0) throw Err(i, Col(lines[i], afterInit), $"unexpected '{Short(afterInit)}' after the init block");
        i++;

        var locations = new Dictionary<string, (int Size, LitmusValue Init, int Order)>();
        var regInits = new Dictionary<int, Dictionary<string, LitmusValue>>();
        int defaultSize = syntax == LitmusSyntax.Att ? 8 : 4;
        foreach (var (item, line, col) in SplitInit(init.ToString(), initLine, lines))
        {
            string s = item.Trim();
            if (s.Length == 0) continue;
            var (type, decl) = SplitType(s);
            int size = type is null ? defaultSize : TypeSize(type) ?? throw Err(line, col, $"unknown type '{type}'");
            string lhs = decl, rhsText = "";
            int eq = decl.IndexOf('=');
            if (eq >= 0) { lhs = decl[..eq].Trim(); rhsText = decl[(eq + 1)..].Trim(); }
            LitmusValue value = rhsText.Length == 0 ? default : ParseValue(rhsText) ?? throw Err(line, col, $"cannot read the value '{Short(rhsText)}'");
            if (TryThreadRegister(lhs, out int thread, out string reg, out _))
            {
                if (!regInits.TryGetValue(thread, out var d)) regInits[thread] = d = [];
                d[reg] = value;
            }
            else if (IsIdentifier(lhs.Trim('[', ']')))
            {
                string loc = lhs.Trim('[', ']');
                locations[loc] = (size, value, locations.TryGetValue(loc, out var had) ? had.Order : locations.Count);
            }
            else throw Err(line, col, $"cannot read the init item '{Short(s)}': expected 'x=1', 'uint64_t x;' or '0:rax=x'");
        }

        // Thread columns: a 'P0 | P1 ... ;' header, then rows.
        SkipBlank();
        if (i >= lines.Length) throw Err(lines.Length - 1, 0, "no thread columns ('P0 | P1 ;')");
        var headerCells = Cells(lines[i]);
        int threads = headerCells.Count;
        for (int p = 0; p < threads; p++)
            if (headerCells[p].Text != $"P{p}")
                throw Err(i, headerCells[p].Column, $"expected thread name 'P{p}' but found '{Short(headerCells[p].Text)}'");
        i++;
        var code = Enumerable.Range(0, threads).Select(_ => new List<LitmusInstruction>()).ToArray();
        for (; i < lines.Length; i++)
        {
            string t = lines[i].Trim();
            if (t.Length == 0) continue;
            if (IsConditionStart(t)) break;
            var cells = Cells(lines[i]);
            if (cells.Count != threads) throw Err(i, 0, $"a row with {cells.Count} columns in a test of {threads} threads");
            for (int p = 0; p < threads; p++)
                if (cells[p].Text.Length > 0) code[p].Add(new LitmusInstruction(cells[p].Text, i + 1, cells[p].Column + 1));
        }

        // Optional locations [...] and filter, then the condition (to the end of the file).
        var extra = new List<LitmusTarget>();
        var condText = new StringBuilder();
        int condLine = i;
        for (; i < lines.Length; i++)
        {
            string t = lines[i].Trim();
            if (t.Length == 0) continue;
            if (t.StartsWith("locations", StringComparison.Ordinal) && condText.Length == 0)
            {
                int lb = t.IndexOf('['), rb = t.LastIndexOf(']');
                if (lb < 0 || rb < lb) throw Err(i, Col(lines[i], t), "expected 'locations [x; 0:rax;]'");
                foreach (var item in t[(lb + 1)..rb].Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    extra.Add(Target(item, locations, i, Col(lines[i], item), file, defaultSize));
                continue;
            }
            if (t.StartsWith("filter", StringComparison.Ordinal) && condText.Length == 0)
                throw Err(i, Col(lines[i], t), "'filter' conditions are not supported");
            if (condText.Length == 0) condLine = i;
            condText.Append(lines[i]).Append('\n');
        }
        if (condText.Length == 0)
        {
            int last = lines.Length - 1;
            while (last > 0 && lines[last].Trim().Length == 0) last--;
            throw Err(last, 0, "no final condition (exists, ~exists or forall) after the thread columns");
        }
        var condition = ParseCondition(condText.ToString(), condLine, file, locations, defaultSize);

        // Locations used only in code or only in the condition exist too (herd declares them implicitly).
        var locs = locations.OrderBy(kv => kv.Value.Order).Select(kv => new LitmusLocation(kv.Key, kv.Value.Size, kv.Value.Init)).ToList();
        foreach (var t in condition.Prop.Targets().Concat(extra))
            if (!t.IsRegister && locs.All(l => l.Name != t.Name)) locs.Add(new LitmusLocation(t.Name, defaultSize, default));
        foreach (var v in regInits.Values.SelectMany(d => d.Values).Concat(locs.Select(l => l.Initial)))
            if (v.AddressOf is { } a && locs.All(l => l.Name != a)) locs.Add(new LitmusLocation(a, defaultSize, default));
        var threadList = Enumerable.Range(0, threads)
            .Select(p => new LitmusThread(p, code[p], regInits.TryGetValue(p, out var d) ? d : new Dictionary<string, LitmusValue>()))
            .ToArray();
        foreach (var p in regInits.Keys)
            if (p >= threads) throw Err(initLine, 0, $"the init block sets a register of thread {p}, but the test has {threads} threads");
        foreach (var t in condition.Prop.Targets().Concat(extra))
            if (t.Thread >= threads) throw Err(condLine, 0, $"'{t.Display}' names thread {t.Thread}, but the test has {threads} threads");
        return new LitmusTest(name, syntax, file, locs, threadList, condition, extra);
    }

    // ---- the condition ---------------------------------------------------------------------------

    private static LitmusCondition ParseCondition(string text, int firstLine, string file,
        Dictionary<string, (int Size, LitmusValue Init, int Order)> locations, int defaultSize)
    {
        var lex = new Lexer(text, firstLine, file);
        Quantifier q;
        if (lex.TryTake("~")) { lex.Expect("exists"); q = Quantifier.NotExists; }
        else if (lex.TryTake("exists")) q = Quantifier.Exists;
        else if (lex.TryTake("forall")) q = Quantifier.Forall;
        else throw lex.Error($"expected 'exists', '~exists' or 'forall' but found '{lex.Peek()}'");
        var prop = ParseOr(lex, locations, defaultSize);
        if (!lex.AtEnd) throw lex.Error($"unexpected '{lex.Peek()}' after the condition");
        string shown = string.Join(' ', text.Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries));
        return new LitmusCondition(q, prop, shown);
    }

    private static LitmusProp ParseOr(Lexer lex, Dictionary<string, (int, LitmusValue, int)> locs, int size)
    {
        var left = ParseAnd(lex, locs, size);
        while (lex.TryTake("\\/")) left = new LitmusProp.Or(left, ParseAnd(lex, locs, size));
        return left;
    }

    private static LitmusProp ParseAnd(Lexer lex, Dictionary<string, (int, LitmusValue, int)> locs, int size)
    {
        var left = ParseUnary(lex, locs, size);
        while (lex.TryTake("/\\")) left = new LitmusProp.And(left, ParseUnary(lex, locs, size));
        return left;
    }

    private static LitmusProp ParseUnary(Lexer lex, Dictionary<string, (int, LitmusValue, int)> locs, int size)
    {
        if (lex.TryTake("~") || lex.TryTake("not")) return new LitmusProp.Not(ParseUnary(lex, locs, size));
        if (lex.TryTake("("))
        {
            var p = ParseOr(lex, locs, size);
            lex.Expect(")");
            return p;
        }
        if (lex.TryTake("true")) return new LitmusProp.Const(true);
        if (lex.TryTake("false")) return new LitmusProp.Const(false);
        var (tok, line, col) = lex.Next();
        if (tok.Length == 0) throw lex.Error("the condition ends where a proposition was expected");
        var target = Target(tok, locs, line, col, lex.File, size);
        bool negated;
        if (lex.TryTake("=")) negated = false;
        else if (lex.TryTake("!=")) negated = true;
        else throw lex.Error($"expected '=' after '{tok}' but found '{lex.Peek()}'");
        var (vt, vl, vc) = lex.Next();
        var value = ParseValue(vt) ?? throw new LitmusException(lex.File, vl + 1, vc + 1, $"cannot read the value '{vt}'");
        return new LitmusProp.Eq(target, value, negated);
    }

    private static LitmusTarget Target(string tok, Dictionary<string, (int Size, LitmusValue Init, int Order)> locs, int line, int col, string file, int defaultSize)
    {
        if (TryThreadRegister(tok, out int thread, out string reg, out int regSize))
            return new LitmusTarget(thread, reg, regSize) { Display = tok };
        string loc = tok.StartsWith('[') && tok.EndsWith(']') ? tok[1..^1] : tok;
        if (!IsIdentifier(loc)) throw new LitmusException(file, line + 1, col + 1, $"expected a register such as '0:rax' or a location, found '{tok}'");
        int size = locs.TryGetValue(loc, out var l) ? l.Size : defaultSize;
        return new LitmusTarget(-1, loc, size) { Display = loc };
    }

    /// <summary>Splits the condition into tokens with their line and column.</summary>
    private sealed class Lexer
    {
        private readonly List<(string Tok, int Line, int Col)> toks = [];
        private int at;
        public readonly string File;

        public Lexer(string text, int firstLine, string file)
        {
            File = file;
            int line = firstLine, col = 0;
            for (int k = 0; k < text.Length;)
            {
                char ch = text[k];
                if (ch == '\n') { line++; col = 0; k++; continue; }
                if (char.IsWhiteSpace(ch)) { k++; col++; continue; }
                string two = k + 1 < text.Length ? text.Substring(k, 2) : "";
                if (two is "/\\" or "\\/" or "!=") { toks.Add((two, line, col)); k += 2; col += 2; continue; }
                if (ch is '(' or ')' or '~' or '=') { toks.Add((ch.ToString(), line, col)); k++; col++; continue; }
                int start = k;
                while (k < text.Length && !char.IsWhiteSpace(text[k]) && text[k] is not ('(' or ')' or '=' or '~' or '!')
                       && !(k + 1 < text.Length && text.Substring(k, 2) is "/\\" or "\\/")) k++;
                if (k == start) throw new LitmusException(file, line + 1, col + 1, $"unexpected character '{ch}' in the condition");
                toks.Add((text[start..k], line, col));
                col += k - start;
            }
        }

        public bool AtEnd => at >= toks.Count;
        public string Peek() => AtEnd ? "end of file" : toks[at].Tok;
        public (string, int, int) Next() => AtEnd ? ("", toks.Count > 0 ? toks[^1].Line : 0, 0) : toks[at++];
        public bool TryTake(string t)
        {
            if (AtEnd || toks[at].Tok != t) return false;
            at++;
            return true;
        }
        public void Expect(string t)
        {
            if (!TryTake(t)) throw Error($"expected '{t}' but found '{Peek()}'");
        }
        public LitmusException Error(string message)
        {
            var (_, line, col) = AtEnd ? (null!, toks.Count > 0 ? toks[^1].Line : 0, toks.Count > 0 ? toks[^1].Col : 0) : toks[at];
            return new LitmusException(File, line + 1, col + 1, message);
        }
    }

    // ---- pieces ----------------------------------------------------------------------------------

    /// <summary>`0:rax`, `1:EAX`, `2:%rbx`: thread, canonical 64-bit register name, size written.</summary>
    internal static bool TryThreadRegister(string s, out int thread, out string reg, out int size)
    {
        thread = -1; reg = ""; size = 0;
        int colon = s.IndexOf(':');
        if (colon <= 0 || !int.TryParse(s.AsSpan(0, colon), NumberStyles.None, CultureInfo.InvariantCulture, out thread)) return false;
        if (!TryRegister(s[(colon + 1)..], out var r)) { thread = -1; return false; }
        reg = r.GetFullRegister().ToString().ToLowerInvariant();
        size = r.GetSize();
        return true;
    }

    /// <summary>A general-purpose register by any of its names, with or without '%', any case.</summary>
    internal static bool TryRegister(string s, out Register r)
    {
        r = Register.None;
        s = s.TrimStart('%');
        if (s.Length == 0 || !char.IsLetter(s[0]) || !Enum.TryParse(s, ignoreCase: true, out Register parsed) || !parsed.IsGPR()) return false;
        r = parsed;
        return true;
    }

    internal static LitmusValue? ParseValue(string s)
    {
        s = s.Trim().TrimStart('$');
        bool neg = s.StartsWith('-');
        string digits = neg ? s[1..] : s;
        if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(digits.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong hex) && Set(hex, out var v1)
            : ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out ulong dec) && Set(dec, out v1))
            return new LitmusValue(neg ? -(long)v1 : (long)v1, null);
        if (!neg && IsIdentifier(s)) return new LitmusValue(0, s);
        return null;

        static bool Set(ulong x, out ulong o) { o = x; return true; }
    }

    internal static bool IsIdentifier(string s) =>
        s.Length > 0 && (char.IsLetter(s[0]) || s[0] == '_') && s.All(ch => char.IsLetterOrDigit(ch) || ch is '_' or '.');

    private static (string? Type, string Decl) SplitType(string s)
    {
        var parts = s.Split((char[])[' ', '\t'], 2, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 2 && parts[1].StartsWith('=')) return (null, s); // 'x = 1'
        if (parts.Length == 2 && TypeSize(parts[0]) is not null) return (parts[0], parts[1]);
        if (parts.Length == 2 && !parts[0].Contains('=') && !parts[0].Contains(':')) return (parts[0], parts[1]);
        return (null, s);
    }

    private static int? TypeSize(string type) => type switch
    {
        "uint64_t" or "int64_t" or "long" or "intptr_t" or "uintptr_t" => 8,
        "uint32_t" or "int32_t" or "int" or "unsigned" => 4,
        "uint16_t" or "int16_t" or "short" => 2,
        "uint8_t" or "int8_t" or "char" => 1,
        _ => null,
    };

    private static IEnumerable<(string Item, int Line, int Col)> SplitInit(string init, int firstLine, string[] lines)
    {
        int line = firstLine;
        int start = 0;
        for (int k = 0; k <= init.Length; k++)
        {
            if (k == init.Length || init[k] == ';' || init[k] == '\n')
            {
                string item = init[start..k];
                if (item.Trim().Length > 0) yield return (item, line, Math.Max(0, Col(lines[Math.Min(line, lines.Length - 1)], item.Trim())));
                if (k < init.Length && init[k] == '\n') line++;
                start = k + 1;
            }
        }
    }

    private static List<(string Text, int Column)> Cells(string line)
    {
        string body = line.TrimEnd();
        if (body.EndsWith(';')) body = body[..^1];
        var cells = new List<(string, int)>();
        int start = 0;
        for (int k = 0; k <= body.Length; k++)
        {
            if (k == body.Length || body[k] == '|')
            {
                string raw = body[start..k];
                int lead = raw.Length - raw.TrimStart().Length;
                cells.Add((raw.Trim(), start + lead));
                start = k + 1;
            }
        }
        return cells;
    }

    private static bool IsConditionStart(string t) =>
        t.StartsWith("exists", StringComparison.Ordinal) || t.StartsWith("~exists", StringComparison.Ordinal) || t.StartsWith("~ exists", StringComparison.Ordinal)
        || t.StartsWith("forall", StringComparison.Ordinal) || t.StartsWith("locations", StringComparison.Ordinal) || t.StartsWith("filter", StringComparison.Ordinal);

    /// <summary>Blanks out (* ... *) comments, keeping line breaks so line numbers stay right.</summary>
    private static string StripComments(string text, string file)
    {
        var sb = new StringBuilder(text.Length);
        int depth = 0, line = 1, openLine = 0;
        for (int k = 0; k < text.Length; k++)
        {
            char ch = text[k];
            if (ch == '\n') line++;
            if (ch == '(' && k + 1 < text.Length && text[k + 1] == '*') { if (depth++ == 0) openLine = line; sb.Append("  "); k++; continue; }
            if (depth > 0 && ch == '*' && k + 1 < text.Length && text[k + 1] == ')') { depth--; sb.Append("  "); k++; continue; }
            sb.Append(depth > 0 && ch != '\n' ? ' ' : ch);
        }
        if (depth > 0) throw new LitmusException(file, openLine, 1, "a '(*' comment is not closed");
        return sb.ToString();
    }

    private static int Col(string line, string token) => Math.Max(0, line.IndexOf(token, StringComparison.Ordinal));
    private static string Short(string s) => s.Length > 40 ? s[..40] + "..." : s;
}
