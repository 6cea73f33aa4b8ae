namespace Frugal.Models;

/// <summary>The <c>frugal</c> command line: parses with System.CommandLine, dispatches commands, turns argument and
/// data-file errors into a message and the command's help (exit code 2) or a message (exit code 1), never a stack
/// trace.</summary>
public static class FrugalCli
{
    /// <summary>The exit codes, as the help states them.</summary>
    public const string ExitCodes = "exit codes: 0 done; 1 a file, data set or device that cannot be used, or the device is out of memory (the message names it, with the bytes per category); 2 a mistake in the command line (the message, then the command's help)";

    private static readonly CliCommand DevicesCommand = new("devices", "The CPU and what the CUDA driver reports (or why CUDA is unavailable).", [], _ => Devices());

    private static readonly CliParser Parser = new(
        $"Frugal: train compressed neural networks in their compressed form. `frugal COMMAND -h` shows one command's options.\n{ExitCodes}",
        [TrainCommand.Command, GptCommand.SampleCommand, ProfileCommand.Command, FrontierCommand.Command, OverparamCommand.Command, DevicesCommand, KernelsCommand.Command]);

    private static int Devices()
    {
        Console.WriteLine($"cpu: {Environment.ProcessorCount} cores, {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated switch { true => "AVX-512", false => System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "no wide vectors" }}");
        Console.WriteLine(Device.CudaStatus);
        return 0;
    }

    /// <summary>The help of <paramref name="command"/> (null: of the whole CLI).</summary>
    public static string Help(string? command = null) => Parser.Help(command);

    /// <summary>Runs one command; returns the process exit code.</summary>
    public static int Run(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        string? command = null;
        try
        {
            if (args.Count == 0 || args[0] is "help" or "--help" or "-h" or "-?")
            {
                Console.WriteLine(Help());
                return args.Count == 0 ? 2 : 0;
            }
            var found = Parser.Find(args[0]);
            command = found.Name;
            // Before any option is checked, so that -h after a mistake still shows the help.
            if (args.Skip(1).Any(a => a is "--help" or "-h" or "-?"))
            {
                Console.WriteLine(Help(command));
                return 0;
            }
            return found.Run(Parser.Parse(args));
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"error: {e.Message}\n");
            Console.Error.WriteLine(Help(command));
            return 2;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException or DeviceUnavailableException or OutOfMemoryException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}
