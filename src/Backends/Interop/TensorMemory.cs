using System.Runtime.InteropServices;
using TorchSharp;

namespace BnbDist.Backends.Interop;

/// <summary>Raw data pointers of TorchSharp tensors, for passing to native kernels.</summary>
/// <remarks>
/// TorchSharp has no public data-pointer accessor. <c>THSTensor_data</c>, exported by libLibTorchSharp, returns
/// <c>tensor.data_ptr()</c>: offset-aware for views, and a device pointer for CUDA tensors. The library is already
/// loaded by TorchSharp under that name, so this import binds to the same copy.
/// </remarks>
public static partial class TensorMemory
{
    [LibraryImport("LibTorchSharp")]
    private static partial IntPtr THSTensor_data(IntPtr handle);

    /// <summary>The address of the first element of <paramref name="tensor"/> (host or device memory).</summary>
    /// <remarks>The caller keeps the tensor alive (and contiguous) for as long as the pointer is used.</remarks>
    public static IntPtr DataPointer(torch.Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (tensor.numel() == 0)
        {
            return IntPtr.Zero;
        }

        var p = THSTensor_data(tensor.Handle);
        torch.CheckForErrors();
        return p;
    }

    /// <summary>Size in bytes of one element of <paramref name="dtype"/>.</summary>
    public static int ElementSize(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Byte or torch.ScalarType.Int8 or torch.ScalarType.Bool => 1,
        torch.ScalarType.Int16 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16 => 2,
        torch.ScalarType.Int32 or torch.ScalarType.Float32 => 4,
        torch.ScalarType.Int64 or torch.ScalarType.Float64 => 8,
        _ => throw new ArgumentException($"Unsupported dtype {dtype}.", nameof(dtype)),
    };
}
