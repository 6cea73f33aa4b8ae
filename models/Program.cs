using Frugal.Models;
using Spectre.Console;

// Redirected output (logs, CI) has no terminal width: give tables room instead of 80 columns.
if (Console.IsOutputRedirected)
    AnsiConsole.Profile.Width = 200;
return FrugalCli.Run(args);
