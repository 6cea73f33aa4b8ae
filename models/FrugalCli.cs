namespace Frugal.Models;

/// <summary>The <c>frugal</c> command line: dispatches commands, turns argument and data-file errors into a message
/// and the usage (exit code 2) or a message (exit code 1), never a stack trace.</summary>
public static class FrugalCli
{
    private const string DevicesUsage = "  frugal devices      the CPU and what the CUDA driver reports (or why CUDA is unavailable)";

    /// <summary>Text of <c>frugal help</c>.</summary>
    public const string Usage = $"""
        Frugal: train compressed neural networks in their compressed form.

        usage:
        {TrainCommand.Usage}
        {GptCommand.Usage}
        {ProfileCommand.Usage}
        {FrontierCommand.Usage}
        {OverparamCommand.Usage}
        {DevicesUsage}
        {KernelsCommand.Usage}
          frugal COMMAND -h   one command's options

        exit codes: 0 done; 1 a file, data set or device that cannot be used, or the device is out of memory (the
        message names it, with the bytes per category); 2 a mistake in the command line (the message, then this text)
          frugal help
        """;

    private static int Devices(int argCount)
    {
        if (argCount > 1)
            throw new UsageException("frugal devices takes no options");
        Console.WriteLine($"cpu: {Environment.ProcessorCount} cores, {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated switch { true => "AVX-512", false => System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "no wide vectors" }}");
        Console.WriteLine(Device.CudaStatus);
        return 0;
    }

    /// <summary>The usage of one command (<c>frugal COMMAND -h</c>), or null for an unknown command.</summary>
    private static string? CommandUsage(string command) => command switch
    {
        "train" => $"{TrainCommand.Usage}\n{GptCommand.Usage}",
        "sample" => GptCommand.Usage,
        "profile" => ProfileCommand.Usage,
        "frontier" => FrontierCommand.Usage,
        "overparam" => OverparamCommand.Usage,
        "kernels" => KernelsCommand.Usage,
        "devices" => DevicesUsage,
        _ => null,
    };

    /// <summary>Runs one command; returns the process exit code.</summary>
    public static int Run(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        try
        {
            if (args.Count == 0 || args[0] is "help" or "--help" or "-h")
            {
                Console.WriteLine(Usage);
                return args.Count == 0 ? 2 : 0;
            }
            if (args.Skip(1).Any(a => a is "--help" or "-h") && CommandUsage(args[0]) is { } usage)
            {
                Console.WriteLine(usage);
                return 0;
            }
            return args[0] switch
            {
                "train" => TrainCommand.Run(args.Skip(1).ToArray()),
                "profile" => ProfileCommand.Run(args.Skip(1).ToArray()),
                "frontier" => FrontierCommand.Run(args.Skip(1).ToArray()),
                "overparam" => OverparamCommand.Run(args.Skip(1).ToArray()),
                "sample" => GptCommand.Sample(args.Skip(1).ToArray()),
                "devices" => Devices(args.Count),
                "kernels" => KernelsCommand.Run(args.Skip(1).ToArray()),
                _ => throw new UsageException($"unknown command '{args[0]}'"),
            };
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"error: {e.Message}\n");
            Console.Error.WriteLine(Usage);
            return 2;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException or DeviceUnavailableException or OutOfMemoryException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}
