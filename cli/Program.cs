using System.CommandLine;
using Harness.Cli;

var root = new RootCommand("harness: an emulated multi-vCPU x86-64 machine for testing kernel binary translators");
root.Subcommands.Add(RunCommand.Create());
return await root.Parse(args).InvokeAsync();
