// Tree-attention masks and position ids for one verification step (docs/design.md#trees, #kv-recipe).
//
// The CUDA twin of fastdec.generation.tree_ops.tree_mask: for B padded trees of N nodes over a
// cache of `past` slots, of which row b's first valid[b] are real (the rest are stale entries of a
// row that accepted fewer tokens than others), node i of row b (depth d) may attend to
//   * cache column c < P = past - offset   iff slot s = offset + c < valid[b]
//                                          and, with a window, valid[b] + d - s < window,
//   * tree column P + j                    iff j is i or an ancestor of i
//                                          and, with a window, d - depth(j) < window,
//   * any column P + N or later            never (a static cache's unused tail).
// `window` <= 0 means full attention; a sliding-window layer passes its window and the number of
// leading slots it has dropped as `offset` (docs/design.md#sliding-window).
// Pad nodes carry parent -1, like roots: they attend only to themselves, so no row is fully
// masked (sdpa returns NaN for those).
//
// Outputs, each optional (a null pointer skips it):
//   * mask      [B, 1, N, cols] additive, elements of `elem_bytes` bytes (2: fp16/bf16, 4: fp32):
//               0 where allowed, `masked_bits` (the dtype's minimum, as transformers uses) elsewhere.
//               Written as raw bits, so the kernel needs no fp16/bf16 headers.
//   * packed    [B, N, W] uint32 with W = ceil(N / 32): bit j % 32 of word j / 32 is set iff tree
//               column j is allowed (the prefix is implicit), for custom attention kernels.
//   * positions [B, N] int64: valid[b] + depth(i).
// The packed bits ignore the window (they are the tree's ancestor relation).
//
// Launch: grid (N, B), any block size (a multiple of 32); dynamic shared memory W * 8 bytes.
// Parents must be parents-first (parents[i] < i); a malformed chain is cut instead of looping.

extern "C" __global__ void tree_mask(const long long* __restrict__ parents,
                                     const long long* __restrict__ valid, int n, int past,
                                     int offset, int window, int cols, int elem_bytes,
                                     unsigned int masked_bits, void* __restrict__ mask,
                                     unsigned int* __restrict__ packed,
                                     long long* __restrict__ positions) {
  // Dynamic shared memory: the ancestor bits, then those within the window.
  extern __shared__ unsigned int anc[];
  __shared__ long long depth;
  const int i = blockIdx.x;
  const int b = blockIdx.y;
  const int words = (n + 31) / 32;
  unsigned int* near = anc + words;
  for (int w = threadIdx.x; w < 2 * words; w += blockDim.x) anc[w] = 0u;
  __syncthreads();
  if (threadIdx.x == 0) {
    // Walk up to the root: at most N steps, parents strictly decrease. The node `d` steps up
    // from i is d positions before it: within the window iff d < window.
    const long long* par = parents + (long long)b * n;
    int d = 0;
    long long j = i;
    while (true) {
      anc[j >> 5] |= 1u << (j & 31);
      if (window <= 0 || d < window) near[j >> 5] |= 1u << (j & 31);
      const long long p = par[j];
      if (p < 0 || p >= j) break;
      j = p;
      ++d;
    }
    depth = d;
    if (positions != nullptr) positions[(long long)b * n + i] = valid[b] + d;
  }
  __syncthreads();
  const long long row = (long long)b * n + i;
  if (packed != nullptr) {
    for (int w = threadIdx.x; w < words; w += blockDim.x) packed[row * words + w] = anc[w];
  }
  if (mask == nullptr) return;
  const long long v = valid[b];
  const long long query = v + depth;  // this node's position
  const int prefix = past - offset;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    bool allowed;
    if (c < prefix) {
      const long long slot = (long long)offset + c;
      allowed = slot < v && (window <= 0 || query - slot < window);
    } else if (c < prefix + n) {
      const int j = c - prefix;
      allowed = (near[j >> 5] >> (j & 31)) & 1u;
    } else {
      allowed = false;
    }
    const unsigned int bits = allowed ? 0u : masked_bits;
    if (elem_bytes == 2) {
      static_cast<unsigned short*>(mask)[row * cols + c] = (unsigned short)bits;
    } else {
      static_cast<unsigned int*>(mask)[row * cols + c] = bits;
    }
  }
}
