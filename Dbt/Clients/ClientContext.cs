using Harness.Dbt.Cache;
using Harness.Smp;
namespace Harness.Dbt.Clients;

/// <summary>What a client gets at attach: the machine, the configuration, the DBT's statistics, and counters.</summary>
public sealed class ClientContext
{
    private readonly CodeCache cache;

    internal ClientContext(Machine machine, CodeCache cache, DbtOptions options, DbtStats stats)
    {
        Machine = machine;
        this.cache = cache;
        Options = options;
        Stats = stats;
    }

    public Machine Machine { get; }
    public DbtOptions Options { get; }
    public DbtStats Stats { get; }

    private readonly List<Counter> counters = new();

    /// <summary>The counters made through this context (one context per client).</summary>
    internal IReadOnlyList<Counter> Counters => counters;

    /// <summary>A new zeroed counter in the code cache's data area (only at attach: the area is not locked).</summary>
    public Counter NewCounter(string name)
    {
        const ulong line = 64;
        ulong at;
        try { at = cache.Data.Allocate(line, line); }
        catch (CodeCacheFullException e) { throw new InvalidOperationException($"no room for client counter '{name}': {e.Message}", e); }
        cache.WriteData(at, new byte[line]);
        var c = new Counter(Machine, cache, name, at);
        counters.Add(c);
        return c;
    }
}
