using System.CommandLine;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using BnbDist.Backends.Interop;
using Spectre.Console;
using TorchSharp;

namespace BnbDist.Cli;

/// <summary>
/// <c>bnbdist diagnose</c>, like <c>python -m bitsandbytes</c>: which backends load (CPU, CUDA kernels, libtorch,
/// GPUs, NCCL) and, for each one that does not, why and what to do.
/// </summary>
internal static class DiagnoseCommand
{
    public static Command Create()
    {
        var cmd = new Command("diagnose", "Print which backends loaded (CPU, CUDA kernels, libtorch, GPUs, NCCL) and why others did not.");
        cmd.SetAction(_ => Run());
        return cmd;
    }

    private static int Run()
    {
        var table = new Table().AddColumns("component", "status", "detail");
        var version = typeof(Functional).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
        table.AddRow("BnbDist", "ok", Markup.Escape($"{version}; .NET {Environment.Version}; {RuntimeInformation.OSDescription}"));

        var simd = Avx512F.IsSupported ? "AVX-512" : Avx2.IsSupported ? "AVX2" : "scalar";
        table.AddRow("CPU backend", "[green]loaded[/]", Markup.Escape($"managed C#, {Environment.ProcessorCount} threads, {simd}"));

        Row(table, "libtorch", () =>
        {
            using var probe = torch.zeros(1);
            var libs = TorchRuntime.LoadedNativeLibraries();
            var torchLib = libs.FirstOrDefault(l => l.Contains("libtorch_cpu", StringComparison.Ordinal)) ?? "(path unknown)";
            return $"TorchSharp {typeof(torch).Assembly.GetName().Version}; {Path.GetDirectoryName(torchLib)}";
        });

        var (cudaOk, cudaDetail) = SafeCudaStatus();
        table.AddRow("CUDA (libtorch)", cudaOk ? "[green]available[/]" : "[yellow]unavailable[/]", Markup.Escape(cudaDetail));
        if (cudaOk)
        {
            for (var d = 0; d < torch.cuda.device_count(); d++)
            {
                var dev = d;
                Row(table, $"GPU {d}", () =>
                {
                    var (major, minor) = CudaRuntime.ComputeCapability(dev);
                    CudaRuntime.SetDevice(dev);
                    var (free, total) = CudaRuntime.MemoryInfo();
                    return $"{CudaRuntime.DeviceName(dev)}, compute capability {major}.{minor}, {total / (1 << 30)} GiB ({free / (1 << 30)} GiB free); " +
                           $"CUDA runtime {Ver(CudaRuntime.RuntimeVersion())}, driver {Ver(CudaRuntime.DriverVersion())}";
                });
            }
        }

        if (KernelLibrary.IsAvailable)
        {
            table.AddRow("CUDA kernels", "[green]loaded[/]", Markup.Escape(KernelLibrary.LoadedPath!));
        }
        else
        {
            table.AddRow("CUDA kernels", "[yellow]not loaded[/]", Markup.Escape(KernelLibrary.LoadError!));
        }

        var (ncclOk, ncclDetail) = NcclProbe();
        table.AddRow("NCCL", ncclOk ? "[green]found[/]" : "[yellow]not found[/]", Markup.Escape(ncclDetail));

        AnsiConsole.Write(table);
        return 0;
    }

    private static (bool, string) SafeCudaStatus()
    {
        try
        {
            return TorchRuntime.CudaStatus();
        }
        catch (Exception ex) when (ex is DllNotFoundException or TypeInitializationException or InvalidOperationException)
        {
            return (false, ex.Message);
        }
    }

    private static void Row(Table table, string name, Func<string> probe)
    {
        try
        {
            table.AddRow(name, "[green]ok[/]", Markup.Escape(probe()));
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            table.AddRow(name, "[red]failed[/]", Markup.Escape(ex.Message.Split('\n')[0]));
        }
    }

    private static string Ver(int v) => $"{v / 1000}.{v % 1000 / 10}";

    private delegate int NcclGetVersion(out int version);

    private static (bool, string) NcclProbe()
    {
        var dir = Environment.GetEnvironmentVariable("NCCL_LIB_DIR");
        var candidates = new List<string>();
        if (!string.IsNullOrEmpty(dir))
        {
            candidates.Add(Path.Combine(dir, "libnccl.so.2"));
        }

        candidates.Add("libnccl.so.2");
        foreach (var c in candidates)
        {
            if (NativeLibrary.TryLoad(c, out var h) && NativeLibrary.TryGetExport(h, "ncclGetVersion", out var fn))
            {
                var get = Marshal.GetDelegateForFunctionPointer<NcclGetVersion>(fn);
                if (get(out var v) == 0)
                {
                    return (true, $"{c}: NCCL {v / 10000}.{v / 100 % 100}.{v % 100}");
                }
            }
        }

        return (false, "libnccl.so.2 not found: install NCCL (PyTorch ships it in nvidia/nccl/lib) and set NCCL_LIB_DIR or LD_LIBRARY_PATH. Only the GPU collectives need it.");
    }
}
