using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>What a rule tells the block translator after emitting: keep translating the fall-through, or stop.</summary>
public enum Flow { Continue, EndBlock }

/// <summary>
/// One translation rule: a family of native instructions and how each becomes cache code. A rule
/// reads the native instruction from <see cref="Emitter.Native"/> and appends the translation to
/// the emitter. Rules are selected by the tables in <see cref="Rulebook"/>; a user's rule is
/// registered by name with <see cref="RuleRegistry"/> and put in charge of a mnemonic through
/// <see cref="DbtOptions.RuleOverrides"/> (docs/writing-rules.md).
/// </summary>
public abstract class Rule
{
    public abstract string Name { get; }
    public abstract Flow Emit(Emitter e);
}

/// <summary>A native instruction no rule translates.</summary>
public sealed class UnsupportedInstructionException(Instruction ins, string? why = null)
    : Exception(why is null ? $"the translator has no rule for '{ins}' at 0x{ins.IP:x}" : $"{why} (at 0x{ins.IP:x})")
{
    public ulong Address { get; } = ins.IP;
}
