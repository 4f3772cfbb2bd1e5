namespace BnbDist.Sharding.Tests;

/// <summary>Multi-process tests run one at a time: each starts several training processes on a 2-core machine.</summary>
[CollectionDefinition("processes", DisableParallelization = true)]
public sealed class ProcessesCollection;
