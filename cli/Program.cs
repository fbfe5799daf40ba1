using System.CommandLine;
using System.CommandLine.Parsing;
using Harness.Cli;

// First: a signal from here on stops the work cleanly and keeps its output (cli/Signals.cs).
Signals.Install();
// Before any machine type is touched (Seams reads the switch once): props records stores at the scheduling points.
if (args.Length > 0 && args[0] == "props") PropsCommand.EnableSeams();
// explore and replay: the scenarios interleave at data accesses (the other commands keep the points folded away).
// litmus: the TSO store buffers drain at the scheduling points.
if (args.Length > 0 && args[0] is "explore" or "replay" or "report" or "catalogue" or "litmus") ExploreCommand.EnableSeams();
var root = new RootCommand("harness: an emulated multi-vCPU x86-64 machine for testing kernel binary translators");
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(PropsCommand.Create());
root.Subcommands.Add(ExploreCommand.Create());
root.Subcommands.Add(ExploreCommand.CreateReplay());
root.Subcommands.Add(ExploreCommand.CreateReport());
root.Subcommands.Add(CatalogueCommand.Create());
root.Subcommands.Add(ExperimentCommand.Create());
root.Subcommands.Add(LitmusCommand.Create());
var parsed = root.Parse(args);
// Bad arguments (unparsable values, unknown options, missing command) exit 2 like every other bad
// input (System.CommandLine's default is 1, which a guest can also return).
if (parsed.Errors.Count > 0)
{
    var messages = parsed.Errors.Select(Describe).ToList();
    // Under --stats json stderr is one JSON document in every outcome, a bad argument included.
    if (WantsJson(args))
        Console.Error.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { error = string.Join("; ", messages), exitCode = ExitCodes.BadInput, help = HelpFor(parsed.CommandResult) }));
    else
    {
        foreach (var m in messages) Console.Error.WriteLine($"harness: {m}");
        Console.Error.WriteLine($"harness: see '{HelpFor(parsed.CommandResult)}'");
    }
    return ExitCodes.BadInput;
}
// System.CommandLine's own Ctrl-C/SIGTERM handling off: Signals decides, for every signal alike.
return await parsed.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }, Signals.Token);

static bool WantsJson(string[] a)
{
    for (int i = 0; i < a.Length; i++)
        if (a[i] is "--stats=json" or "--stats:json" || a[i] == "--stats" && i + 1 < a.Length && a[i + 1] == "json") return true;
    return false;
}

// Name the option a bad value belongs to ("Argument 'x' not recognized" alone does not say which).
static string Describe(ParseError e)
{
    SymbolResult? s = e.SymbolResult;
    while (s is not null and not OptionResult) s = s.Parent;
    return s is OptionResult o && !e.Message.Contains(o.Option.Name) ? $"{o.Option.Name}: {e.Message}" : e.Message;
}

// The help of the command the bad arguments were given to ("harness bench dbt --help").
static string HelpFor(CommandResult c)
{
    var names = new List<string>();
    for (SymbolResult? s = c; s is CommandResult { Command: not RootCommand } r; s = s.Parent) names.Insert(0, r.Command.Name);
    return string.Join(' ', names.Prepend("harness").Append("--help"));
}
