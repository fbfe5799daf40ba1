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
    private static readonly NamedFactories<Rule> rules = new("rule");

    static RuleRegistry()
    {
        foreach (var r in Rulebook.BuiltIn) rules.Register(r.Name, () => r);
    }

    /// <summary>Registers a rule under a name (lower-case letters, digits and '-'); names are never replaced.</summary>
    public static void Register(string name, Func<Rule> create) => rules.Register(name, create);

    public static bool IsRegistered(string name) => rules.IsRegistered(name);

    public static IReadOnlyList<string> Names => rules.Names;

    internal static Rule Create(string name) => rules.Create(name);
}

/// <summary>Factories by name, for the rule and client registries: registered once, never replaced.</summary>
internal sealed class NamedFactories<T>(string what) where T : class
{
    private readonly ConcurrentDictionary<string, Func<T>> factories = new(StringComparer.Ordinal);

    public void Register(string name, Func<T> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        RegistryNames.Check(name, what);
        if (!factories.TryAdd(name, create)) throw new ArgumentException($"a {what} named '{name}' is already registered", nameof(name));
    }

    public bool IsRegistered(string name) => factories.ContainsKey(name);

    public IReadOnlyList<string> Names => factories.Keys.Order(StringComparer.Ordinal).ToList();

    public T Create(string name)
    {
        if (!factories.TryGetValue(name, out var create))
            throw new ArgumentException($"no {what} named '{name}' is registered (registered: {string.Join(", ", Names)})");
        return create() ?? throw new InvalidOperationException($"the factory of {what} '{name}' returned null");
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
