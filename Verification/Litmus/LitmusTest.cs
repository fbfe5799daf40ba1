namespace Harness.Verification.Litmus;

/// <summary>
/// One x86 litmus test in the herd/litmus7 format: its locations with initial values, one
/// instruction column per thread, and the final condition. Instructions stay text here;
/// <see cref="LitmusAssembler"/> turns them into machine code.
/// </summary>
public sealed record LitmusTest(
    string Name,
    LitmusSyntax Syntax,
    string File,
    IReadOnlyList<LitmusLocation> Locations,
    IReadOnlyList<LitmusThread> Threads,
    LitmusCondition Condition,
    IReadOnlyList<LitmusTarget> ExtraObserved)
{
    /// <summary>What a final state lists: the condition's registers and locations, then the `locations [...]` line's.</summary>
    public IReadOnlyList<LitmusTarget> Observed { get; } =
        Condition.Prop.Targets().Concat(ExtraObserved).Distinct().OrderBy(t => t.SortKey, StringComparer.Ordinal).ToArray();

    public LitmusLocation Location(string name) => Locations.First(l => l.Name == name);
}

/// <summary>The header's architecture: `X86` tests are written in herd's Intel syntax, `X86_64` in AT&amp;T syntax.</summary>
public enum LitmusSyntax { Intel, Att }

/// <summary>A shared location: its name, size in bytes (from its declared type), and initial value (a constant or another location's address).</summary>
public sealed record LitmusLocation(string Name, int Size, LitmusValue Initial);

/// <summary>A constant, or the address of a location (`0:rax=x`).</summary>
public readonly record struct LitmusValue(long Constant, string? AddressOf)
{
    public override string ToString() => AddressOf ?? Constant.ToString();
}

public sealed record LitmusInstruction(string Text, int Line, int Column);

/// <summary>A thread's instructions (empty cells dropped) and its initial register values (canonical 64-bit register names).</summary>
public sealed record LitmusThread(int Index, IReadOnlyList<LitmusInstruction> Code, IReadOnlyDictionary<string, LitmusValue> Registers);

public enum Quantifier { Exists, NotExists, Forall }

public sealed record LitmusCondition(Quantifier Quantifier, LitmusProp Prop, string Text)
{
    public override string ToString() => Text;
}

/// <summary>What a final state gives a value to: a thread's register (`0:rax`, masked to the size written) or a location (`x`).</summary>
public sealed record LitmusTarget(int Thread, string Name, int Size)
{
    public bool IsRegister => Thread >= 0;
    public ulong Mask => Size >= 8 ? ulong.MaxValue : (1UL << (8 * Size)) - 1;
    public string SortKey => IsRegister ? $"{Thread}:{Name}" : $"~{Name}";
    /// <summary>As herd writes it: `0:rax` or `x`.</summary>
    public string Display { get; init; } = "";
    public override string ToString() => Display;
    public bool Equals(LitmusTarget? o) => o is not null && Thread == o.Thread && Name == o.Name && Size == o.Size;
    public override int GetHashCode() => HashCode.Combine(Thread, Name, Size);
}

/// <summary>The condition's proposition.</summary>
public abstract record LitmusProp
{
    public abstract bool Eval(Func<LitmusTarget, ulong> value, Func<string, ulong> addressOf);
    public abstract IEnumerable<LitmusTarget> Targets();

    public sealed record Const(bool Value) : LitmusProp
    {
        public override bool Eval(Func<LitmusTarget, ulong> value, Func<string, ulong> addressOf) => Value;
        public override IEnumerable<LitmusTarget> Targets() => [];
    }

    public sealed record Eq(LitmusTarget Target, LitmusValue Value, bool Negated) : LitmusProp
    {
        public override bool Eval(Func<LitmusTarget, ulong> value, Func<string, ulong> addressOf)
        {
            ulong want = Value.AddressOf is { } l ? addressOf(l) : (ulong)Value.Constant;
            return ((value(Target) ^ want) & Target.Mask) == 0 != Negated;
        }
        public override IEnumerable<LitmusTarget> Targets() => [Target];
    }

    public sealed record Not(LitmusProp Inner) : LitmusProp
    {
        public override bool Eval(Func<LitmusTarget, ulong> value, Func<string, ulong> addressOf) => !Inner.Eval(value, addressOf);
        public override IEnumerable<LitmusTarget> Targets() => Inner.Targets();
    }

    public sealed record And(LitmusProp Left, LitmusProp Right) : LitmusProp
    {
        public override bool Eval(Func<LitmusTarget, ulong> value, Func<string, ulong> addressOf) => Left.Eval(value, addressOf) && Right.Eval(value, addressOf);
        public override IEnumerable<LitmusTarget> Targets() => Left.Targets().Concat(Right.Targets());
    }

    public sealed record Or(LitmusProp Left, LitmusProp Right) : LitmusProp
    {
        public override bool Eval(Func<LitmusTarget, ulong> value, Func<string, ulong> addressOf) => Left.Eval(value, addressOf) || Right.Eval(value, addressOf);
        public override IEnumerable<LitmusTarget> Targets() => Left.Targets().Concat(Right.Targets());
    }
}

/// <summary>A litmus file that cannot be read: names the file, line, column and token.</summary>
public sealed class LitmusException(string file, int line, int column, string message)
    : Exception($"{file}:{line}:{column}: {message}")
{
    public string File { get; } = file;
    public int Line { get; } = line;
    public int Column { get; } = column;
}
