using System.Collections.Concurrent;

namespace Harness.Dbt.Translate;

/// <summary>
/// Every rule by name: the built-in ones (the names <see cref="Rulebook"/>'s tables use) and the
/// ones users register. <see cref="DbtOptions.RuleOverrides"/> maps mnemonics to these names; each
/// DBT instance creates its own instance of a user rule (built-in rules are shared: they keep no
/// state).
/// </summary>
public static class RuleRegistry
{
    private static readonly ConcurrentDictionary<string, Func<Rule>> rules = new(StringComparer.Ordinal);

    static RuleRegistry()
    {
        foreach (var r in Rulebook.BuiltIn) rules[r.Name] = () => r;
    }

    /// <summary>Registers a rule under a name (lower-case letters, digits and '-'); names are never replaced.</summary>
    public static void Register(string name, Func<Rule> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        RegistryNames.Check(name, "rule");
        if (!rules.TryAdd(name, create)) throw new ArgumentException($"a rule named '{name}' is already registered", nameof(name));
    }

    public static bool IsRegistered(string name) => rules.ContainsKey(name);

    public static IReadOnlyList<string> Names => rules.Keys.Order(StringComparer.Ordinal).ToList();

    internal static Rule Create(string name)
    {
        if (!rules.TryGetValue(name, out var create))
            throw new ArgumentException($"no rule named '{name}' is registered (registered: {string.Join(", ", Names)})");
        return create() ?? throw new InvalidOperationException($"the factory of rule '{name}' returned null");
    }
}

/// <summary>The name syntax shared by rules and clients: what a command line can spell without quoting.</summary>
internal static class RegistryNames
{
    public static bool IsValid(string? name) =>
        !string.IsNullOrEmpty(name) && name.All(c => c is >= 'a' and <= 'z' or >= '0' and <= '9' or '-');

    public static void Check(string? name, string what)
    {
        if (!IsValid(name)) throw new ArgumentException($"{what} name '{name}': use lower-case letters, digits and '-'", nameof(name));
    }
}
