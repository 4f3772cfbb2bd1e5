using BnbDist.Collectives.Nccl;

namespace BnbDist.Collectives.Tests.Nccl;

/// <summary>Finding NCCL: every unusable candidate is named with its reason, and the error says what to set.</summary>
public class NcclLibraryTests
{
    [Fact]
    public void UnusableCandidatesAreEachExplainedAndTheFixIsNamed()
    {
        var notALibrary = Path.GetTempFileName();
        try
        {
            var libc = new[] { "/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6" }.First(File.Exists);
            var r = NcclLibrary.Load(["/nonexistent/libnccl.so.2", notALibrary, libc, "libnccl-that-does-not-exist.so.2"]);
            Assert.Equal(IntPtr.Zero, r.Handle);
            Assert.Contains("/nonexistent/libnccl.so.2 (not found)", r.Error, StringComparison.Ordinal);
            Assert.Contains($"{notALibrary} (dlopen failed", r.Error, StringComparison.Ordinal);
            Assert.Contains($"{libc} (no ncclGetVersion export: not NCCL)", r.Error, StringComparison.Ordinal);
            Assert.Contains("libnccl-that-does-not-exist.so.2 (not on the loader's search path)", r.Error, StringComparison.Ordinal);
            Assert.Contains(NcclLibrary.PathVariable, r.Error, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(notALibrary);
        }
    }

    [Fact]
    public void TheVariableNamingAFolderMeansTheLibraryInIt()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var old = Environment.GetEnvironmentVariable(NcclLibrary.PathVariable);
        try
        {
            Environment.SetEnvironmentVariable(NcclLibrary.PathVariable, dir);
            Assert.Equal(Path.Combine(dir, NcclLibrary.FileName), NcclLibrary.Candidates()[0]);
        }
        finally
        {
            Environment.SetEnvironmentVariable(NcclLibrary.PathVariable, old);
            Directory.Delete(dir);
        }
    }

    [Theory]
    [InlineData(22809, "2.28.9")]
    [InlineData(21003, "2.10.3")]
    [InlineData(2804, "2.8.4")]
    public void VersionCodesReadAsNcclPrintsThem(int code, string text) => Assert.Equal(text, NcclLibrary.FormatVersion(code));

    [Theory]
    [InlineData("cpu", "cpu")]
    [InlineData("CPU", "cpu")]
    [InlineData("nccl", "nccl")]
    public void ARequestedBackendIsTaken(string requested, string expected) =>
        Assert.Equal(expected, new DistributedEnvironment { Backend = requested }.ChooseBackend().Backend);

    [Fact]
    public void AnUnknownBackendIsAnErrorNamingTheVariable()
    {
        var ex = Assert.Throws<ArgumentException>(() => new DistributedEnvironment { Backend = "gloo" }.ChooseBackend());
        Assert.Contains("BNBDIST_BACKEND", ex.Message, StringComparison.Ordinal);
    }
}
