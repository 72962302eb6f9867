// Tree verification: greedy (docs/design.md#greedy) and lossless stochastic for deterministic drafts
// (the single-coin point-mass rule, §2.3). The CUDA twins of
// fastdec.generation.tree_ops.verify_greedy and fastdec.sampling.verify_stochastic_ref.
//
// Inputs per step: B padded trees of n nodes, `tokens` and `parents` [B, n] int64 (parents -1 for
// roots and pads), `num_nodes` [B] int64 (nodes past it are padding).
// Outputs: `accept_index` [B, n] int32, the accepted node ids root first, -1 after the end;
// `accept_len` [B] int32 (path nodes, the root included: the tokens the step emits with the
// bonus); `bonus` [B] int64, the token that follows the path; `status` [B] int32 (stochastic
// only): 0, or 1 when the stop node's row has no mass, or 2 when a probability read is negative
// or not finite (the launcher raises ValueError for both, as the reference does).
//
// Siblings carry distinct tokens (TokenTree guarantees it), so at most one node per depth passes.

// Greedy: node j is on the path iff every node from the root down to j carries the target's
// argmax at its parent. One block per tree, threads over nodes; the path's last node is the
// deepest that passes (smallest id on a tie, which distinct siblings rule out).
extern "C" __global__ void verify_greedy(const long long* __restrict__ tokens,
                                         const long long* __restrict__ parents,
                                         const long long* __restrict__ num_nodes,
                                         const long long* __restrict__ argmax, int n,
                                         int* __restrict__ accept_index,
                                         int* __restrict__ accept_len,
                                         long long* __restrict__ bonus) {
  __shared__ int best;  // depth << 16 | (0xffff - node): atomicMax picks the deepest
  const int b = blockIdx.x;
  const long long* tok = tokens + (long long)b * n;
  const long long* par = parents + (long long)b * n;
  const long long* target = argmax + (long long)b * n;
  int* out = accept_index + (long long)b * n;
  const int real = (int)min((long long)n, num_nodes[b]);
  if (threadIdx.x == 0) best = 0xffff;  // the root: depth 0, node 0
  for (int j = threadIdx.x; j < n; j += blockDim.x) out[j] = -1;
  __syncthreads();
  for (int j = threadIdx.x; j < real; j += blockDim.x) {
    bool ok = true;
    int d = 0;
    long long k = j;
    while (k > 0) {
      const long long p = par[k];
      if (p < 0 || p >= k || tok[k] != target[p]) {
        ok = false;
        break;
      }
      k = p;
      ++d;
    }
    if (ok) {
      out[d] = j;
      atomicMax(&best, (d << 16) | (0xffff - j));
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int last = 0xffff - (best & 0xffff);
    accept_len[b] = (best >> 16) + 1;
    bonus[b] = target[last];
  }
}

// Stochastic. At node u with children x_1..x_k (ascending node id) and target distribution p_u:
// one coin c = coins[u, 0]; accept the first child with c < sum_{j <= i} p_u(x_j) (float64 sums
// in that order); repeat from it. At the stop node u the bonus is the inverse CDF of p_u with u's
// children's tokens removed, at coins[u, 1] * Z.
//
// The CDF is summed in a fixed chunked order that a block computes in parallel and the host
// reference (fastdec.sampling) reproduces bit for bit: the vocabulary in chunks of CHUNK tokens,
// each chunk summed sequentially in float64 (total[c]), the chunk offsets off[c] as the
// sequential sum of the totals before it; cdf[t] = off[chunk(t)] + (sequential sum within the
// chunk up to t). Z = off[last] + total[last]. The bonus is the smallest t with x < cdf[t].
// If Z == 0 the children hold all the mass and the coin exceeded their float sum only by
// rounding: the last child with nonzero probability is accepted and the walk goes on.
//
// Launch: grid B, block a multiple of 32; dynamic shared memory
// ceil(vocab / 32) * 4 (excluded-token bitmap) + ceil(vocab / CHUNK) * 8 bytes (chunk totals).
// `probs` is [B, n, vocab] float32, contiguous; `coins` [B, n, 2] float64.

#define CHUNK 256

extern "C" __global__ void verify_stochastic(const long long* __restrict__ tokens,
                                             const long long* __restrict__ parents,
                                             const long long* __restrict__ num_nodes,
                                             const float* __restrict__ probs,
                                             const double* __restrict__ coins, int n, int vocab,
                                             int* __restrict__ accept_index,
                                             int* __restrict__ accept_len,
                                             long long* __restrict__ bonus,
                                             int* __restrict__ status) {
  extern __shared__ unsigned char smem[];
  const int words = (vocab + 31) / 32;
  const int chunks = (vocab + CHUNK - 1) / CHUNK;
  // Chunk totals first: 8-byte aligned at the start of dynamic shared memory.
  double* total = reinterpret_cast<double*>(smem);
  unsigned int* excluded = reinterpret_cast<unsigned int*>(smem + sizeof(double) * chunks);
  __shared__ int u_s;       // the node being resolved
  __shared__ int len_s;     // nodes on the path so far
  __shared__ int bad_s;     // a probability read was negative or not finite
  __shared__ int done_s;    // the bonus was drawn (or an error was found)

  const int b = blockIdx.x;
  const long long* tok = tokens + (long long)b * n;
  const long long* par = parents + (long long)b * n;
  const double* coin = coins + (long long)b * n * 2;
  int* out = accept_index + (long long)b * n;
  const int real = (int)min((long long)n, num_nodes[b]);

  for (int j = threadIdx.x; j < n; j += blockDim.x) out[j] = -1;
  if (threadIdx.x == 0) {
    u_s = 0;
    len_s = 1;
    bad_s = 0;
    done_s = 0;
    out[0] = 0;
    status[b] = 0;
  }
  __syncthreads();

  while (true) {
    // Acceptance walk from u_s: sequential, one thread (a path is a handful of nodes).
    if (threadIdx.x == 0) {
      int u = u_s;
      while (true) {
        const float* p = probs + ((long long)b * n + u) * vocab;
        const double c = coin[2 * u];
        double cum = 0.0;
        int next = -1;
        for (int j = u + 1; j < real; ++j) {
          if (par[j] != u) continue;
          const double q = (double)p[tok[j]];
          if (!(q >= 0.0 && q <= 1.0e308)) bad_s = 1;  // negative, NaN or infinite
          cum += q;
          if (c < cum) {
            next = j;
            break;
          }
        }
        if (next < 0) break;
        out[len_s++] = next;
        u = next;
      }
      u_s = u;
    }
    __syncthreads();
    const int u = u_s;
    const float* p = probs + ((long long)b * n + u) * vocab;

    // Bonus at u: the children's tokens are excluded (bitmap), chunk totals in parallel.
    for (int w = threadIdx.x; w < words; w += blockDim.x) excluded[w] = 0u;
    __syncthreads();
    for (int j = u + 1 + threadIdx.x; j < real; j += blockDim.x) {
      const long long t = tok[j];
      if (par[j] == u && t >= 0 && t < vocab) atomicOr(&excluded[t >> 5], 1u << (t & 31));
    }
    __syncthreads();
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      const int end = min(vocab, (c + 1) * CHUNK);
      double s = 0.0;
      for (int t = c * CHUNK; t < end; ++t) {
        const double q = (double)p[t];
        if (!(q >= 0.0 && q <= 1.0e308)) bad_s = 1;
        if (!((excluded[t >> 5] >> (t & 31)) & 1u)) s += q;
      }
      total[c] = s;
    }
    __syncthreads();

    if (threadIdx.x == 0) {
      if (bad_s) {
        status[b] = 2;
        done_s = 1;
      } else {
        double z = 0.0;
        for (int c = 0; c < chunks; ++c) z += total[c];
        if (z > 0.0) {
          const double x = coin[2 * u + 1] * z;
          double off = 0.0;
          int pick = -1;
          int last_chunk = -1;
          for (int c = 0; c < chunks && pick < 0; ++c) {
            if (total[c] > 0.0) last_chunk = c;
            const double next_off = off + total[c];
            if (x < next_off) {
              // Inside this chunk: the same sequential sums as its total.
              double acc = 0.0;
              const int end = min(vocab, (c + 1) * CHUNK);
              for (int t = c * CHUNK; t < end; ++t) {
                if ((excluded[t >> 5] >> (t & 31)) & 1u) continue;
                const double q = (double)p[t];
                acc += q;
                if (q > 0.0 && x < off + acc) {
                  pick = t;
                  break;
                }
              }
            }
            off = next_off;
          }
          if (pick < 0) {
            // Rounding guard (x rounded up to Z): the last token with mass.
            for (int c = chunks - 1; c >= 0 && last_chunk < 0; --c)
              if (total[c] > 0.0) last_chunk = c;
            const int end = min(vocab, (last_chunk + 1) * CHUNK);
            for (int t = last_chunk * CHUNK; t < end; ++t)
              if (!((excluded[t >> 5] >> (t & 31)) & 1u) && p[t] > 0.0f) pick = t;
          }
          bonus[b] = pick;
          done_s = 1;
        } else {
          // Z == 0: accept the last child with mass and keep walking.
          int last = -1;
          for (int j = u + 1; j < real; ++j)
            if (par[j] == u && p[tok[j]] > 0.0f) last = j;
          if (last < 0) {
            status[b] = 1;
            done_s = 1;
          } else {
            out[len_s++] = last;
            u_s = last;
          }
        }
      }
    }
    __syncthreads();
    if (done_s) break;
  }
  if (threadIdx.x == 0) {
    accept_len[b] = len_s;
    if (status[b] != 0) bonus[b] = -1;
  }
}
