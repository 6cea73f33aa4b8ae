// The README's example, exactly as written there (tests/ReadmeSamplesTests.cs checks that it is).
using Frugal; using Frugal.Data; using Frugal.Memory; using Frugal.Nn; using Frugal.Optim;

var device = Device.Cpu;
var data = FashionMnist.Load();                    // Debian's install path, or FashionMnist.Load("DIR")
Init.ManualSeed(1);
using var model = new Sequential(
    new Flatten(), new Linear(784, 512), new ReLU(),
    new Linear(512, 512), new ReLU(), new Linear(512, 10));
using var opt = new Adam(model.Parameters(), lr: 1e-3);

foreach (var (x, y) in data.Train.Batches(128, shuffle: true, seed: 1, device: device))
{
    using var scope = TensorScope.Begin();         // frees this step's temporaries
    var loss = F.CrossEntropy(model.Forward(x), y);
    loss.Backward();                               // saved activations freed as they are used
    opt.Step();
    opt.ZeroGrad();
}
Console.WriteLine(device.Allocator.Stats());       // current/peak bytes per category, cache
