using System.Reflection;
using System.Runtime.Loader;
using Harness.Dbt.Clients;
using Iced.Intel;

namespace Harness.Dbt.Translate;

/// <summary>
/// `--rules FILE.dll`: a translator author's assembly of rules and clients. Every public concrete
/// subclass of <see cref="Rule"/> or <see cref="Client"/> with a public parameterless constructor is
/// registered under its <c>Name</c> (one instance is made to read it), unless the assembly already
/// registered that name itself. The assembly is loaded into the default load context, so it binds
/// to the harness's own Dbt, Machine.Smp and Iced (its project references them with Private=false:
/// docs/writing-rules.md); its other dependencies are found beside it.
/// </summary>
public static class RulePlugins
{
    public sealed class PluginException(string message) : Exception(message);

    public sealed record Loaded(string Path, IReadOnlyList<string> Rules, IReadOnlyList<string> Clients);

    private static readonly List<string> directories = new();

    public static Loaded Load(FileInfo file)
    {
        string path = file.FullName;
        if (Directory.Exists(path)) throw new PluginException($"--rules: {path} is a directory, not an assembly (give the .dll the rules project built)");
        if (!file.Exists) throw new PluginException($"--rules: assembly not found: {path}");
        lock (directories)
        {
            if (directories.Count == 0) AssemblyLoadContext.Default.Resolving += ResolveBeside;
            directories.Add(Path.GetDirectoryName(path)!);
        }
        Assembly asm;
        try { asm = AssemblyLoadContext.Default.LoadFromAssemblyPath(path); }
        catch (BadImageFormatException) { throw new PluginException($"--rules: {path} is not a .NET assembly"); }
        catch (FileLoadException e) { throw new PluginException($"--rules: {path} cannot be loaded: {e.Message}"); }

        Type[] types;
        try { types = asm.GetExportedTypes(); }
        catch (Exception e) when (e is ReflectionTypeLoadException or FileNotFoundException or FileLoadException or TypeLoadException)
        {
            string why = e is ReflectionTypeLoadException r
                ? string.Join("; ", r.LoaderExceptions.Where(x => x is not null).Select(x => x!.Message).Distinct())
                : e.Message;
            throw new PluginException($"--rules: the types of {path} cannot be loaded ({why}); build it against this harness's Dbt (docs/writing-rules.md)");
        }
        var rules = new List<string>();
        var clients = new List<string>();
        foreach (var t in types.Where(t => t is { IsClass: true, IsAbstract: false } && t.GetConstructor(Type.EmptyTypes) is not null))
        {
            if (typeof(Rule).IsAssignableFrom(t)) rules.Add(Register(t, path, RuleRegistry.IsRegistered, (n, f) => RuleRegistry.Register(n, () => (Rule)f())));
            else if (typeof(Client).IsAssignableFrom(t)) clients.Add(Register(t, path, ClientRegistry.IsRegistered, (n, f) => ClientRegistry.Register(n, () => (Client)f())));
        }
        if (rules.Count + clients.Count == 0)
            throw new PluginException($"--rules: {path} has no public Rule or Client subclass with a public parameterless constructor");
        return new Loaded(path, rules, clients);
    }

    private static string Register(Type t, string path, Func<string, bool> isRegistered, Action<string, Func<object>> register)
    {
        object Make()
        {
            try { return Activator.CreateInstance(t)!; }
            catch (TargetInvocationException e) { throw new PluginException($"--rules: {path}: new {t.FullName}() threw {e.InnerException?.GetType().Name}: {e.InnerException?.Message}"); }
        }
        string name = typeof(Rule).IsAssignableFrom(t) ? ((Rule)Make()).Name : ((Client)Make()).Name;
        if (!isRegistered(name))
        {
            try { register(name, Make); }
            catch (ArgumentException e) { throw new PluginException($"--rules: {path}: {t.FullName}: {e.Message}"); }
        }
        return name;
    }

    private static Assembly? ResolveBeside(AssemblyLoadContext context, AssemblyName name)
    {
        lock (directories)
            foreach (var d in directories)
            {
                string candidate = Path.Combine(d, name.Name + ".dll");
                if (File.Exists(candidate)) return context.LoadFromAssemblyPath(candidate);
            }
        return null;
    }
}

/// <summary>`--rule MNEMONIC=RULE` arguments: which registered rule translates a mnemonic (DbtOptions.RuleOverrides).</summary>
public static class RuleOverrides
{
    /// <summary>The map, or null with error naming the bad argument.</summary>
    public static Dictionary<Mnemonic, string>? Parse(IEnumerable<string> args, out string? error)
    {
        var map = new Dictionary<Mnemonic, string>();
        error = null;
        foreach (var a in args)
        {
            int eq = a.IndexOf('=');
            string m = eq < 0 ? a : a[..eq], name = eq < 0 ? "" : a[(eq + 1)..];
            if (eq <= 0 || name.Length == 0) error = $"--rule: '{a}' is not MNEMONIC=RULE (e.g. nop=elide-nop)";
            else if (!Enum.TryParse(m, ignoreCase: true, out Mnemonic mnemonic) || mnemonic == Mnemonic.INVALID || int.TryParse(m, out _))
                error = $"--rule: '{m}' is not an x86 mnemonic (Iced's names: nop, mov, call, ret, lidt, ...)";
            else if (!RuleRegistry.IsRegistered(name))
                error = $"--rule: no rule named '{name}' (available: {string.Join(", ", RuleRegistry.Names)})";
            else if (!map.TryAdd(mnemonic, name)) error = $"--rule: '{m}' is given more than once";
            if (error is not null) return null;
        }
        return map;
    }
}
