using System.Collections.Concurrent;
using Harness.Dbt.Translate;

namespace Harness.Dbt.Clients;

/// <summary>Every client by name: the built-in prof and the ones users register (<see cref="DbtOptions.Clients"/> names them).</summary>
public static class ClientRegistry
{
    private static readonly ConcurrentDictionary<string, Func<Client>> clients = new(StringComparer.Ordinal);

    static ClientRegistry()
    {
        clients[Prof.ClientName] = () => new Prof();
    }

    /// <summary>Registers a client under a name (lower-case letters, digits and '-'); names are never replaced.</summary>
    public static void Register(string name, Func<Client> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        RegistryNames.Check(name, "client");
        if (!clients.TryAdd(name, create)) throw new ArgumentException($"a client named '{name}' is already registered", nameof(name));
    }

    public static bool IsRegistered(string name) => clients.ContainsKey(name);

    public static IReadOnlyList<string> Names => clients.Keys.Order(StringComparer.Ordinal).ToList();

    internal static Client Create(string name)
    {
        if (!clients.TryGetValue(name, out var create))
            throw new ArgumentException($"no client named '{name}' is registered (registered: {string.Join(", ", Names)})");
        return create() ?? throw new InvalidOperationException($"the factory of client '{name}' returned null");
    }
}
