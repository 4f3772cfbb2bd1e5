using System.CommandLine;
using BnbDist.Backends.Interop;
using BnbDist.Cli;

TorchRuntime.PreloadFromEnvironment();

var root = new RootCommand("BnbDist: bitsandbytes-class quantization for .NET. Commands: diagnose, quantize-report.");
root.Subcommands.Add(DiagnoseCommand.Create());
root.Subcommands.Add(QuantizeReportCommand.Create());
return root.Parse(args).Invoke();
