using BnbDist.Optim8bit.Backends;
using BnbDist.Optim8bit.Kernels;
using static TorchSharp.torch;

namespace BnbDist.Optim8bit.Paging;

/// <summary>
/// The step of paged states: State1/State2 live in host memory; consecutive 256-aligned slices of the group's
/// parameters are copied into fixed-size staging buffers on the parameters' device, stepped there with one backend call
/// per filled page (many tensors per call), and copied back. Page boundaries fall on quantization blocks, so the result
/// is bit-identical to the resident step.
/// </summary>
internal static class PagedStep
{
    /// <summary>Steps <paramref name="updates"/>, whose State1/State2 are host tensors; absmax and qmaps are on the device.</summary>
    public static void Run(IOptimizerStepBackend backend, UpdateRule rule, IReadOnlyList<ParamUpdate> updates, long pageElements, StagingBuffers staging)
    {
        // 8-bit and 32-bit states stage through buffers of their own dtype.
        foreach (var group in updates.GroupBy(u => u.Is8bit))
        {
            var page = new Page(backend, rule, pageElements, staging, group.Key);
            foreach (var u in group)
            {
                page.Add(u);
            }

            page.Flush();
        }
    }

    private sealed class Page(IOptimizerStepBackend backend, UpdateRule rule, long pageElements, StagingBuffers staging, bool is8bit)
    {
        private readonly List<ParamUpdate> staged = [];
        private readonly List<(Tensor Host, Tensor Staged)> copyBack = [];
        private long used;

        public void Add(ParamUpdate u)
        {
            var n = u.Count;
            var device = u.Param.device;
            var dtype = is8bit ? ScalarType.Byte : ScalarType.Float32;
            for (long start = 0; start < n;)
            {
                var take = Math.Min(n - start, pageElements - used);
                if (start + take < n)
                {
                    // A slice that does not finish its tensor ends on a quantization block boundary.
                    take -= take % Adam8bitBlockwise.BlockSize;
                }

                if (take == 0)
                {
                    Flush();
                    continue;
                }

                var b0 = start / Adam8bitBlockwise.BlockSize;
                var blocks = (take + Adam8bitBlockwise.BlockSize - 1) / Adam8bitBlockwise.BlockSize;
                staged.Add(u with
                {
                    Param = u.Param.narrow(0, start, take),
                    Grad = u.Grad.narrow(0, start, take),
                    State1 = Stage(u.State1, 0, device, dtype, start, take),
                    State2 = u.State2 is null ? null : Stage(u.State2, 1, device, dtype, start, take),
                    Absmax1 = u.Absmax1?.narrow(0, b0, blocks),
                    Absmax2 = u.Absmax2?.narrow(0, b0, blocks),
                });

                // Slices start 256-aligned in the staging buffer too (a fused kernel may rely on aligned blocks).
                used += blocks * Adam8bitBlockwise.BlockSize;
                start += take;
                if (used >= pageElements)
                {
                    Flush();
                }
            }
        }

        public void Flush()
        {
            if (staged.Count == 0)
            {
                return;
            }

            OptimizerBackends.Run(backend, rule, staged);
            foreach (var (host, s) in copyBack)
            {
                // Blocking: the staging buffers are reused by the next page, and host state must be final when step() returns.
                host.copy_(s);
            }

            staged.Clear();
            copyBack.Clear();
            used = 0;
        }

        private Tensor Stage(Tensor host, int slot, Device device, ScalarType dtype, long start, long take)
        {
            var s = staging.Get(device, dtype, slot, pageElements).narrow(0, used, take);
            var h = host.narrow(0, start, take);
            s.copy_(h, nonBlocking: host.is_pinned());
            copyBack.Add((h, s));
            return s;
        }
    }
}
