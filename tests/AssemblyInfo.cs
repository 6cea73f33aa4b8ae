// Tensor.LiveCount and the process-wide CPU device's allocator are shared by every test: run tests one at a time.
// (xunit v3 4.x: CollectionBehavior.DisableTestParallelization is obsolete in favour of Parallelization.Mode.)
[assembly: Xunit.v3.Parallelization(Mode = Xunit.Sdk.ParallelMode.None)]
