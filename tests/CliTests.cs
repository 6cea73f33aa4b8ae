using System.Globalization;
using System.Text.RegularExpressions;
using Frugal.Models;
using Spectre.Console;

namespace Frugal.Tests;

/// <summary>The <c>frugal</c> CLI run in-process with its console captured.</summary>
public class CliTests
{
    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        // The CLI trains on Device.Cpu and its table reports that allocator: a tensor leaked by another test would
        // show up in it, so say so here rather than as a wrong byte count.
        foreach (var category in new[] { Frugal.Memory.MemoryCategory.Parameter, Frugal.Memory.MemoryCategory.Gradient, Frugal.Memory.MemoryCategory.OptimizerState, Frugal.Memory.MemoryCategory.Activation })
        {
            var leaked = Device.Cpu.Allocator.Current(category);
            Assert.True(leaked == 0, $"{leaked} bytes of {category} are still alive on the CPU device before this CLI run: a test leaked them");
        }
        var (savedOut, savedErr, savedAnsi) = (Console.Out, Console.Error, AnsiConsole.Console);
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        Console.SetOut(stdout);
        Console.SetError(stderr);
        AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(stdout),
        });
        AnsiConsole.Profile.Width = 200;   // as the CLI sets it for redirected output
        try
        {
            var code = FrugalCli.Run(args);
            return (code, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(savedOut);
            Console.SetError(savedErr);
            AnsiConsole.Console = savedAnsi;
        }
    }

    private static void AssertUsageError(string[] args, string message)
    {
        var (code, _, err) = Run(args);
        Assert.Equal(2, code);
        Assert.Contains(message, err, StringComparison.Ordinal);
        Assert.Contains("Usage:", err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
    }

    [Fact]
    public void ArgumentErrorsPrintTheMessageAndUsage_NotAStackTrace()
    {
        AssertUsageError(["train", "--bogus", "1"], "unknown option --bogus");
        Assert.DoesNotContain("did you mean", Run("train", "--bogus", "1").Err, StringComparison.Ordinal);
        AssertUsageError(["train", "--optimzer-bits", "8"], "unknown option --optimzer-bits; did you mean --optimizer-bits?");
        AssertUsageError(["train", "--epoch", "2"], "unknown option --epoch; did you mean --epochs?");
        AssertUsageError(["train", "--update-in-backwards"], "unknown option --update-in-backwards; did you mean --update-in-backward?");
        AssertUsageError(["profile", "--optimizer", "8"], "unknown option --optimizer; did you mean --optimizer-bits?");
        AssertUsageError(["frontier", "--budgetof", "dense:8"], "unknown option --budgetof; did you mean --budget-of?");
        AssertUsageError(["train", "--epochs", "zero"], "--epochs must be an integer >= 1, got 'zero'");
        AssertUsageError(["train", "--lr", "-1"], "--lr must be a positive number, got '-1'");
        AssertUsageError(["train", "--model", "resnet"], "--model must be one of mlp|mlp-shared|cnn|gpt, got 'resnet'");
        AssertUsageError(["train", "--schedule", "step"], "--schedule must be one of cosine|constant, got 'step'");
        AssertUsageError(["train", "--batch"], "option --batch needs a value");
        AssertUsageError(["train", "--seed", "1", "--seed", "2"], "option --seed given twice");
        AssertUsageError(["fly"], "unknown command 'fly'");
        AssertUsageError(["trian"], "unknown command 'trian'; did you mean 'train'?");
        AssertUsageError(["train", "--checkpoint", "--checkpoint"], "option --checkpoint given twice");
        AssertUsageError(["train", "--epochs", "2", "mlp"], "unexpected argument 'mlp'");
        AssertUsageError(["train", "--epochz=2"], "unknown option --epochz; did you mean --epochs?");
        var responseFile = Path.GetTempFileName();
        try
        {
            File.WriteAllText(responseFile, "--model mlp\n--epochs 0\n");
            AssertUsageError(["train", "@" + responseFile], "--epochs must be an integer >= 1, got '0'");   // options read from @FILE
        }
        finally
        {
            File.Delete(responseFile);
        }
    }

    [Fact]
    public void AnOptionOfOneModelIsRefusedForAnother()
    {
        AssertUsageError(["train", "--model", "mlp", "--layers", "2"], "--layers is for --model gpt");
        AssertUsageError(["train", "--model", "gpt", "--epochs", "2"], "--epochs is for the image models (--model mlp|mlp-shared|cnn)");
        AssertUsageError(["train", "--model", "cnn", "--steps", "3"], "--steps is the length of a --model gpt run; an image model trains for --epochs: give --steps-per-epoch N");
        AssertUsageError(["profile", "--model", "mlp", "--corpus", "x.txt"], "--corpus is not for --model mlp");
        AssertUsageError(["profile", "--model", "gpt", "--data", "embedded"], "--data is not for --model gpt");
    }

    [Fact]
    public void HelpPrintsUsage()
    {
        var (code, output, _) = Run("help");
        Assert.Equal(0, code);
        Assert.Contains("frugal [command] [options]", output, StringComparison.Ordinal);
        foreach (var command in new[] { "train", "sample", "profile", "frontier", "overparam", "devices", "kernels" })
            Assert.Matches($@"(?m)^\s+{command}\s+\S", output);
        Assert.Contains("exit codes: 0 done; 1 a file, data set or device that cannot be used", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("train", "--sparsity")]
    [InlineData("profile", "--formats")]
    [InlineData("frontier", "--budget-of")]
    [InlineData("overparam", "--task")]
    [InlineData("sample", "--temperature")]
    [InlineData("kernels", "frugal kernels")]
    [InlineData("devices", "frugal devices")]
    public void ACommandsHelpShowsItsOptionsAndExitsZero(string command, string option)
    {
        // Before any option is checked: -h after a bad option still shows the help.
        var (code, output, err) = Run(command, "--no-such-option", "-h");
        Assert.True(code == 0, output + err);
        Assert.Contains(option, output, StringComparison.Ordinal);
        Assert.Contains($"frugal {command} [options]", output, StringComparison.Ordinal);
        Assert.DoesNotContain("Commands:", output, StringComparison.Ordinal);   // that command's help, not the whole CLI's
    }

    [Theory]
    [InlineData("mlp")]
    [InlineData("gpt")]
    public void AnUnwritableSaveIsRefusedBeforeTraining(string model)
    {
        var path = Path.Combine(Path.GetTempPath(), "frugal-no-such-folder-" + Guid.NewGuid().ToString("N"), "run.safetensors");
        string[] data = model == "gpt" ? [] : ["--data", "embedded"];
        var (code, output, err) = Run(["train", "--model", model, .. data, model == "gpt" ? "--steps" : "--steps-per-epoch", "1", "--save", path]);
        Assert.Equal(2, code);
        Assert.Contains($"--save {path}: the folder", err, StringComparison.Ordinal);
        Assert.DoesNotContain("epoch", output, StringComparison.Ordinal);
        Assert.DoesNotContain("step", output, StringComparison.Ordinal);
    }

    [Fact]
    public void TrainWritesAMetricsLineForEveryStepAndEpochAndItsPlot()
    {
        var path = Path.Combine(Path.GetTempPath(), $"frugal-metrics-{Guid.NewGuid():N}.jsonl");
        try
        {
            var (code, output, err) = Run("train", "--data", "embedded", "--steps-per-epoch", "7", "--epochs", "2", "--metrics", path);
            Assert.True(code == 0, output + err);
            var lines = File.ReadAllLines(path).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
            Assert.Equal(14 + 2, lines.Count);
            var steps = lines.Where(l => l.TryGetProperty("loss", out _)).ToList();
            Assert.Equal(Enumerable.Range(1, 14), steps.Select(l => l.GetProperty("step").GetInt32()));
            Assert.All(steps, l => Assert.InRange(l.GetProperty("loss").GetDouble(), 0.01, 5.0));
            var epochs = lines.Where(l => l.TryGetProperty("epoch", out _)).ToList();
            Assert.Equal([7, 14], epochs.Select(l => l.GetProperty("step").GetInt32()));
            // The epoch line's training loss is the mean of its steps' losses, and its accuracy the one printed.
            Assert.Equal(steps.Take(7).Average(l => l.GetProperty("loss").GetDouble()), epochs[0].GetProperty("trainLoss").GetDouble(), 1e-9);
            Assert.Contains(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"test accuracy {epochs[1].GetProperty("testAccuracy").GetDouble():F4}"), output, StringComparison.Ordinal);
            Assert.True(new FileInfo(Path.ChangeExtension(path, ".png")).Length > 10_000);
        }
        finally
        {
            File.Delete(path);
            File.Delete(Path.ChangeExtension(path, ".png"));
        }
    }

    [Fact]
    public void TrainCheckpointKeepsFewerActivationsForTheSameResults()
    {
        string[] args = ["train", "--model", "cnn", "--data", "embedded", "--steps-per-epoch", "2"];
        var (plainCode, plain, plainErr) = Run(args);
        var (code, checkpointed, err) = Run([.. args, "--checkpoint"]);
        Assert.True(plainCode == 0 && code == 0, plainErr + err);
        static string Accuracy(string output) => Regex.Match(output, @"test accuracy (\d\.\d{4})").Groups[1].Value;
        static long ActivationPeak(string output) => long.Parse(Regex.Match(output, @"Activation\s*│[^│]*│\s*([\d,]+)").Groups[1].Value.Replace(",", "", StringComparison.Ordinal), CultureInfo.InvariantCulture);
        Assert.Equal(Accuracy(plain), Accuracy(checkpointed));
        Assert.True(ActivationPeak(checkpointed) < 0.9 * ActivationPeak(plain), $"{ActivationPeak(checkpointed)} against {ActivationPeak(plain)}");
        AssertUsageError(["train", "--format", "csr:0.1", "--sparsity", "snip", "--checkpoint"], "--checkpoint is not built for --sparsity snip");
    }

    [Fact]
    public void MissingDataFolderIsNamed()
    {
        var dir = Path.Combine(Path.GetTempPath(), "frugal-no-such-folder-" + Guid.NewGuid().ToString("N"));
        var (code, _, err) = Run("train", "--data", dir, "--steps-per-epoch", "1");
        Assert.Equal(1, code);
        Assert.Contains(dir, err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
    }

    [Fact]
    public void TrainOnTheEmbeddedSlicePrintsAccuracyAndExactParameterBytes()
    {
        var (code, output, err) = Run("train", "--model", "mlp", "--data", "embedded", "--steps-per-epoch", "20", "--seed", "4");
        Assert.True(code == 0, err);
        Assert.Contains("data: embedded slice of Fashion-MNIST (10000 train, 2000 test)", output, StringComparison.Ordinal);
        Assert.DoesNotContain("not installed", output, StringComparison.Ordinal);   // asked for, not a fallback
        Assert.Matches(@"epoch 1/1: train loss [0-9.]+, test accuracy 0\.[5-9]", output);
        Assert.Contains("examples/s", output, StringComparison.Ordinal);
        // 784·512 + 512 + 512·512 + 512 + 512·10 + 10 = 669,706 floats; Adam holds two more copies.
        Assert.Matches(@"Parameter\s.*2,678,824", output);
        Assert.Matches(@"OptimizerState\s.*5,357,648", output);
    }

    [Fact]
    public void DevicesReportsTheCpuAndTheCudaStatus()
    {
        var (code, output, _) = Run("devices");
        Assert.Equal(0, code);
        Assert.Contains($"cpu: {Environment.ProcessorCount} cores", output, StringComparison.Ordinal);
        Assert.Contains(Device.CudaStatus.ToString(), output, StringComparison.Ordinal);
        AssertUsageError(["devices", "--all"], "unknown option --all");
    }

    [Fact]
    public void KernelsRefusesWhatItCannotCheck()
    {
        // Compiling runs in a child process (KernelCheckTests): this process's NVRTC may be the emulator's.
        AssertUsageError(["kernels", "--arch", "90"], "architecture must look like sm_90, got '90'");
        AssertUsageError(["kernels", "--arch", "sm_80,sm90"], "architecture must look like sm_90, got 'sm90'");
        AssertUsageError(["kernels", "--arch", ","], "--arch is empty");
        AssertUsageError(["kernels", "--ptxas", "x"], "unknown option --ptxas");
        var missing = Path.Combine(Path.GetTempPath(), $"no-cuobjdump-{Guid.NewGuid():N}");
        var (code, _, err) = Run("kernels", "--arch", "sm_90", "--cuobjdump", missing);
        Assert.Equal(1, code);
        Assert.Contains($"cuobjdump not found at '{missing}'", err, StringComparison.Ordinal);
        if (!Device.IsCudaAvailable)
            AssertUsageError(["kernels"], "no GPU to take the architecture from");
    }

    [Fact]
    public void DeviceOptionNamesWhatIsMissing()
    {
        AssertUsageError(["train", "--device", "gpu"], "--device must be cpu, cuda or cuda:N, got 'gpu'");
        if (Device.IsCudaAvailable)
            return;
        var (code, _, err) = Run("train", "--device", "cuda", "--data", "embedded", "--steps-per-epoch", "1");
        Assert.Equal(1, code);
        Assert.Contains("cuda:0: CUDA unavailable", err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
    }

    [Fact]
    public void CsrFormatTrainsTheMlpWithExactSparseBytes()
    {
        AssertUsageError(["train", "--format", "csr:2"], "--format: weight format 'csr:2' is not one of: dense, csr:D, bsr:D:B, lowrank:R, lowrank:F");
        AssertUsageError(["train", "--format", "coo"], "weight format 'coo' is not one of");
        AssertUsageError(["train", "--format", "bsr:0.1:12"], "weight format 'bsr:0.1:12' is not one of");
        AssertUsageError(["train", "--sparsity", "set", "--data", "embedded"], "--sparsity set needs sparse weights with F32 values: give --format csr:D or bsr:D:B");
        AssertUsageError(["train", "--sparsity", "rigl", "--format", "csr:0.1+q4", "--data", "embedded"], "--sparsity rigl needs sparse weights with F32 values");
        AssertUsageError(["train", "--distribution", "erk", "--data", "embedded"], "--distribution erk needs sparse weights");
        AssertUsageError(["train", "--sparsity", "magic"], "--sparsity must be one of static|snip|set|rigl|snfs, got 'magic'");
        var (code, output, err) = Run("train", "--model", "mlp", "--format", "csr:0.1", "--data", "embedded", "--steps-per-epoch", "10");
        Assert.True(code == 0, err);
        Assert.Contains("(csr:0.1)", output, StringComparison.Ordinal);
        // Per row round(0.1 · inputs) values: 512·78 + 512·51 + 10·51, plus the dense biases.
        const long values = 512 * 78 + 512 * 51 + 10 * 51, biases = 512 + 512 + 10;
        Assert.Matches($@"Parameter\s.*{4 * (values + biases):N0}", output);
        Assert.Matches($@"FormatMeta\s.*{4 * (513 + 513 + 11 + values):N0}", output);
        Assert.Matches($@"OptimizerState\s.*{8 * (values + biases):N0}", output);
    }

    [Fact]
    public void BsrFormatTrainsTheMlpWithExactBlockBytes()
    {
        var (code, output, err) = Run("train", "--model", "mlp", "--format", "bsr:0.1:16", "--data", "embedded", "--steps-per-epoch", "10");
        Assert.True(code == 0, err);
        Assert.Contains("(bsr:0.1:16)", output, StringComparison.Ordinal);
        // 16×16 blocks: round(0.1 · 49) = 5 blocks per block row of 784→512 (32 block rows), round(0.1 · 32) = 3 of
        // 512→512; the 10-class head is not whole blocks and stays dense.
        const long blocks = 32 * 5 + 32 * 3, values = blocks * 256 + 10 * 512, biases = 512 + 512 + 10;
        Assert.Contains("Linear(784, 512, bsr16, density: 0.102, bias: True)", output, StringComparison.Ordinal);
        Assert.Contains("Linear(512, 10", output, StringComparison.Ordinal);
        Assert.Matches($@"Parameter\s.*{4 * (values + biases):N0}", output);
        Assert.Matches($@"FormatMeta\s.*{4 * (33 + 33 + blocks):N0}", output);
        Assert.Matches($@"OptimizerState\s.*{8 * (values + biases):N0}", output);
    }

    [Fact]
    public void LowRankSharedAndDistilledModelsTrainWithExactBytes()
    {
        var (code, output, err) = Run("train", "--model", "mlp", "--format", "lowrank:0.25", "--data", "embedded", "--steps-per-epoch", "10");
        Assert.True(code == 0, err);
        var oneLine = System.Text.RegularExpressions.Regex.Replace(output, @"\s+", " ");   // the console wraps long lines
        Assert.Contains("Linear(784, 512, lowrank, rank: 77, bias: True), Linear(512, 512, lowrank, rank: 64, bias: True), Linear(512, 10, bias: True)", oneLine, StringComparison.Ordinal);
        const long values = 77 * (784 + 512) + 64 * (512 + 512) + 512 * 10 + 512 + 512 + 10;
        Assert.Matches($@"Parameter\s.*{4 * values:N0}", output);
        Assert.Matches($@"OptimizerState\s.*{8 * values:N0}", output);

        (code, output, err) = Run("train", "--model", "mlp-shared", "--data", "embedded", "--steps-per-epoch", "10");
        Assert.True(code == 0, err);
        Assert.Contains("669,706 parameters", output, StringComparison.Ordinal);   // four weight layers, three weights

        (code, output, err) = Run("train", "--model", "mlp", "--format", "lowrank:16", "--teacher", "dense", "--kd-alpha", "0.5", "--data", "embedded", "--steps-per-epoch", "5");
        Assert.True(code == 0, err);
        Assert.Contains("teacher epoch 1/1", output, StringComparison.Ordinal);
        Assert.Contains("distillation: T 4, α 0.5", System.Text.RegularExpressions.Regex.Replace(output, @"\s+", " "), StringComparison.Ordinal);

        AssertUsageError(["train", "--kd-alpha", "0.5"], "need a teacher: give --teacher FORMAT");
        AssertUsageError(["train", "--teacher", "dense", "--kd-alpha", "2", "--data", "embedded"], "--kd-alpha in [0, 1]");
        AssertUsageError(["train", "--format", "lowrank:0"], "weight format 'lowrank:0' is not one of");
        AssertUsageError(["train", "--format", "lowrank:600", "--data", "embedded"], "rank 600 is outside [1, 512]");
        AssertUsageError(["train", "--model", "mlp-shared", "--format", "csr:0.1", "--sparsity", "snip", "--data", "embedded"], "reuses a layer that pruning would replace");
    }

    [Fact]
    public void ProfileComparesFormatsAndWritesJsonAndPictures()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"frugal-profile-{Environment.ProcessId}");
        try
        {
            var (code, output, err) = Run("profile", "--model", "mlp", "--formats", "dense,csr:0.1", "--steps", "2", "--data", "embedded", "--out", dir);
            Assert.True(code == 0, err);
            // The dense row by hand: 669,706 parameters; Parameter, Gradient (+ one [128, 512] in flight),
            // OptimizerState (two moments), Activation (3·[128, 512] floats: two saved ReLU outputs and a Linear
            // output for an instant), Other (the batch).
            Assert.Matches(@"dense\s*│\s*669,706\s*│\s*2,678,824\s*│\s*2,940,968\s*│\s*5,357,648\s*│\s*786,432\s*│", output);
            Assert.Matches(@"csr:0.1\s*│\s*67,592\s*│\s*270,368\s*│", output);
            Assert.Matches(@"\[1/2\] dense: 11,384,484 bytes at once, [\d.]+ ms/step", output);   // progress, run by run
            Assert.Matches(@"\[2/2\] csr:0.1: [\d,]+ bytes at once", output);
            using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "profile.json")));
            var runs = json.RootElement.GetProperty("runs");
            Assert.Equal("frugal-profile/1", json.RootElement.GetProperty("schema").GetString());
            Assert.Equal(2, runs.GetArrayLength());
            Assert.Equal(2678824, runs[0].GetProperty("peak").GetProperty("Parameter").GetInt64());
            Assert.Equal(270380, runs[1].GetProperty("peak").GetProperty("FormatMeta").GetInt64());
            Assert.True(runs[0].GetProperty("step").GetArrayLength() > 10);
            foreach (var file in new[] { "peaks.png", "peaks.svg", "step-dense.png", "step-dense.svg", "step-csr-0.1.png" })
                Assert.True(new FileInfo(Path.Combine(dir, file)).Length > 1000, file);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ProfileRefusesWhatItCannotDo()
    {
        AssertUsageError(["profile", "--formats", "dense,q4:64"], "group of 64 values does not divide the input dimension 784");
        AssertUsageError(["profile", "--formats", "dense,coo"], "weight format 'coo' is not one of");
        AssertUsageError(["profile", "--formats", ""], "--formats is empty");
        var file = Path.GetTempFileName();
        try
        {
            AssertUsageError(["profile", "--out", file, "--data", "embedded"], $"--out: cannot write to '{file}'");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void EightBitOptimizerStatesHoldAQuarterOfTheBytes()
    {
        var (code, output, err) = Run("train", "--model", "mlp", "--optimizer-bits", "8", "--data", "embedded", "--steps-per-epoch", "5");
        Assert.True(code == 0, err);
        Assert.Contains("8-bit optimizer states", output, StringComparison.Ordinal);
        // Tensors of ≥ 4096 values: codes of whole 2048-value blocks for both moments and an F32 scale per block;
        // the biases and the 10×512 head's bias stay 32-bit (the head's weight, 5,120 values, is quantized).
        static long Quantized(long n) => 2 * ((n + 2047) / 2048 * (2048 + 4));
        var bytes = Quantized(784 * 512) + Quantized(512 * 512) + Quantized(512 * 10) + 8L * (512 + 512 + 10);
        Assert.Matches($@"OptimizerState\s.*{bytes:N0}", output);
        AssertUsageError(["train", "--optimizer", "sgd", "--optimizer-bits", "8"], "--optimizer-bits 8 is for adam and adamw");
        AssertUsageError(["train", "--format", "csr:0.1", "--sparsity", "snfs", "--optimizer-bits", "8"], "--sparsity snfs reads Adam's first moment");
    }

    [Fact]
    public void UpdateInBackwardKeepsOneLayersGradientAtATime()
    {
        var (code, output, err) = Run("train", "--model", "mlp", "--update-in-backward", "--data", "embedded", "--steps-per-epoch", "5");
        Assert.True(code == 0, err);
        // The first layer's weight gradient (784·512 floats, the largest) while one [128, 512] input gradient is
        // still in flight; every other gradient was applied and freed before it.
        Assert.Matches($@"Gradient\s.*{4L * (784 * 512 + 128 * 512):N0}", output);
        AssertUsageError(["train", "--update-in-backward", "--precision", "fp16"], "cannot be combined with --precision fp16");
        AssertUsageError(["train", "--update-in-backward", "--clip-grad-norm", "1"], "--clip-grad-norm cannot be combined with --update-in-backward");
    }

    [Theory]
    [InlineData("dense")]
    [InlineData("q4")]
    [InlineData("csr:0.1")]
    public void AStoppedAndResumedRunEqualsTheUninterruptedOneBitForBit(string format)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"frugal-resume-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string[] common = ["train", "--model", "mlp", "--epochs", "2", "--steps-per-epoch", "5", "--data", "embedded", "--format", format, "--optimizer-bits", format == "q4" ? "8" : "32"];
            string F(string name) => Path.Combine(dir, name);
            var (code, _, err) = Run([.. common, "--save", F("whole.safetensors")]);
            Assert.True(code == 0, err);
            (code, var stopped, err) = Run([.. common, "--stop-after", "7", "--save", F("part.safetensors")]);
            Assert.True(code == 0, err);
            Assert.Contains("stopped after step 7", stopped, StringComparison.Ordinal);
            (code, var resumed, err) = Run([.. common, "--resume", F("part.safetensors"), "--save", F("resumed.safetensors")]);
            Assert.True(code == 0, err);
            Assert.Contains("after step 7", resumed, StringComparison.Ordinal);
            Assert.Equal(File.ReadAllBytes(F("whole.safetensors")), File.ReadAllBytes(F("resumed.safetensors")));

            AssertUsageError([.. common[..^2], "--optimizer-bits", "32", "--lr", "0.01", "--resume", F("part.safetensors")], "give the same options to continue it");
            var bytes = File.ReadAllBytes(F("part.safetensors"));
            bytes[^1] ^= 1;
            File.WriteAllBytes(F("damaged.safetensors"), bytes);
            AssertUsageError([.. common, "--resume", F("damaged.safetensors")], "do not match their frugal.sha256 hash");
            AssertUsageError([.. common, "--resume", F("missing.safetensors")], "missing.safetensors");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ResumeRefusesWhatItCannotRestore()
        => AssertUsageError(["train", "--format", "csr:0.1", "--sparsity", "set", "--resume", "x.safetensors"], "--resume is not built for --teacher");

    [Fact]
    public void GptTrainsOnACorpusReportsValidationLossAndSamples()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"frugal-gpt-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var corpus = Path.Combine(dir, "corpus.txt");
            File.WriteAllText(corpus, string.Concat(Enumerable.Range(0, 400).Select(i => $"the cat {i % 7} sat on the mat {i % 3}.\n")));
            var checkpoint = Path.Combine(dir, "gpt.safetensors");
            var (code, output, err) = Run("train", "--model", "gpt", "--layers", "1", "--width", "16", "--heads", "2", "--context", "16",
                "--batch", "8", "--steps", "30", "--eval-every", "15", "--corpus", corpus, "--save", checkpoint);
            Assert.True(code == 0, err);
            Assert.Contains("unigram baseline: validation loss", output, StringComparison.Ordinal);
            Assert.Matches(@"step 30/30: train loss [0-9.]+, validation loss [0-9.]+", output);
            // Stopped at step 17 and resumed: the same checkpoint, byte for byte.
            string[] tiny = ["train", "--model", "gpt", "--layers", "1", "--width", "16", "--heads", "2", "--context", "16", "--batch", "8", "--steps", "30", "--corpus", corpus];
            var part = Path.Combine(dir, "part.safetensors");
            var resumed = Path.Combine(dir, "resumed.safetensors");
            (code, output, err) = Run([.. tiny, "--eval-every", "15", "--stop-after", "17", "--save", part]);
            Assert.True(code == 0, err);
            Assert.Contains("stopped after step 17", output, StringComparison.Ordinal);
            (code, output, err) = Run([.. tiny, "--eval-every", "15", "--resume", part, "--save", resumed]);
            Assert.True(code == 0, err);
            Assert.Equal(File.ReadAllBytes(checkpoint), File.ReadAllBytes(resumed));
            AssertUsageError([.. tiny, "--lr", "0.01", "--resume", part], "give the same options to continue it");
            (code, output, err) = Run([.. tiny[..^4], "--steps", "3", "--embedding-format", "lowrank:4", "--attention-format", "q8", "--corpus", corpus]);
            Assert.True(code == 0, err);
            Assert.Contains("step 3/3", output, StringComparison.Ordinal);
            (code, output, err) = Run("sample", "--load", checkpoint, "--prompt", "the cat", "--tokens", "12");
            Assert.True(code == 0, err);
            Assert.StartsWith("the cat", output.TrimStart(), StringComparison.Ordinal);
            AssertUsageError(["sample"], "sample needs --load FILE");
            (code, output, err) = Run("profile", "--model", "gpt", "--formats", "dense,q4", "--steps", "1", "--corpus", corpus, "--out", Path.Combine(dir, "profile"));
            Assert.True(code == 0, err);
            Assert.Matches(@"q4:auto:masterfree\s+│\s+3,257,856", output);
            Assert.True(File.Exists(Path.Combine(dir, "profile", "peaks.png")));
            AssertUsageError(["train", "--model", "gpt", "--width", "30", "--heads", "4", "--corpus", corpus], "width 30 is not a positive multiple of 4 heads");
            AssertUsageError(["train", "--model", "gpt", "--context", "100000", "--corpus", corpus], "the corpus");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
