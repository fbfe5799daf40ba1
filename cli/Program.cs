using System.CommandLine;
using System.CommandLine.Parsing;
using Harness.Cli;

var root = new RootCommand("harness: an emulated multi-vCPU x86-64 machine for testing kernel binary translators");
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
var parsed = root.Parse(args);
// Bad arguments (unparsable values, unknown options, missing command) exit 2 like every other bad
// input (System.CommandLine's default is 1, which a guest can also return).
if (parsed.Errors.Count > 0)
{
    foreach (var e in parsed.Errors) Console.Error.WriteLine($"harness: {Describe(e)}");
    Console.Error.WriteLine($"harness: see '{HelpFor(parsed.CommandResult)}'");
    return ExitCodes.BadInput;
}
return await parsed.InvokeAsync();

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
