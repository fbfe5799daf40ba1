using Harness.Dbt.Translate;

namespace Harness.Dbt.Clients;

/// <summary>Every client by name: the built-in prof and the ones users register (<see cref="DbtOptions.Clients"/> names them).</summary>
public static class ClientRegistry
{
    private static readonly NamedFactories<Client> clients = new("client");

    static ClientRegistry()
    {
        clients.Register(Prof.ClientName, () => new Prof());
    }

    /// <summary>Registers a client under a name (lower-case letters, digits and '-'); names are never replaced.</summary>
    public static void Register(string name, Func<Client> create) => clients.Register(name, create);

    public static bool IsRegistered(string name) => clients.IsRegistered(name);

    public static IReadOnlyList<string> Names => clients.Names;

    internal static Client Create(string name) => clients.Create(name);
}
