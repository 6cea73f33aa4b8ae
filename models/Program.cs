using Frugal.Models;

const string usage = $"""
    Frugal: train compressed neural networks in their compressed form.

    usage:
    {TrainCommand.Usage}
      frugal help
    """;

try
{
    if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
    {
        Console.WriteLine(usage);
        return args.Length == 0 ? 2 : 0;
    }
    return args[0] switch
    {
        "train" => TrainCommand.Run(args[1..]),
        _ => throw new UsageException($"unknown command '{args[0]}'"),
    };
}
catch (UsageException e)
{
    Console.Error.WriteLine($"error: {e.Message}\n");
    Console.Error.WriteLine(usage);
    return 2;
}
catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
