// KV-cache compaction after verification, all layers in one launch (docs/design.md#compaction).
//
// After row b accepted the path [a_0 = 0, a_1, ..., a_m] of its tree, whose K/V entries sit at
// cache slots past + a_t, they move to slots dst[b] + t (dst[b] = the row's valid length before
// the step). `src` holds past + a_t per row, -1 after the path's end.
//
// In place and race-free: one thread owns one column (a `U`-sized unit of one head's row of one
// K or V tensor of one layer, for one batch row) and moves it for t = 0, 1, ... in that order.
// src is strictly increasing and src[t] >= dst[t] (past >= dst[b], a_t >= t), so when slot
// dst[t] is written every source still to be read, src[t'] >= past + t' > dst[t] for t' > t,
// is intact. A fully parallel copy over t would race (path [0, 2, 3]: t = 2 writes what t = 1
// reads).
//
// Tensors are described by byte pointers and byte strides, so any dtype and any strided view
// (DynamicCache's `[B, H, S, D]` layers, slices of a StaticCache) works, as long as a row's
// `row_units * sizeof(U)` bytes are contiguous and aligned to sizeof(U). One table entry per
// tensor: E = 2 * layers (keys and values), all with the same number of heads and row bytes.
//
// Launch: 1-D, one thread per (entry, batch row, head, unit); extra threads return.

template <typename U>
__global__ void kv_compact(const unsigned long long* __restrict__ bases,
                           const long long* __restrict__ strides,  // [E, 3]: batch, head, seq
                           int entries, int batch, int heads, int row_units,
                           const int* __restrict__ src,  // [B, m]
                           const int* __restrict__ dst,  // [B]
                           int m) {
  const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long total = (long long)entries * batch * heads * row_units;
  if (g >= total) return;
  const int unit = (int)(g % row_units);
  const int h = (int)((g / row_units) % heads);
  const int b = (int)((g / ((long long)row_units * heads)) % batch);
  const int e = (int)(g / ((long long)row_units * heads * batch));
  const long long* st = strides + 3LL * e;
  char* base = reinterpret_cast<char*>(bases[e]) + b * st[0] + h * st[1] +
               (long long)unit * (long long)sizeof(U);
  const int* s = src + (long long)b * m;
  const int d0 = dst[b];
  for (int t = 0; t < m; ++t) {
    const int from = s[t];
    if (from < 0) break;
    const int to = d0 + t;
    if (from != to) {
      *reinterpret_cast<U*>(base + to * st[2]) = *reinterpret_cast<const U*>(base + from * st[2]);
    }
  }
}

// Instantiations the launcher asks for by name (NVRTC name expressions).
template __global__ void kv_compact<unsigned char>(const unsigned long long*, const long long*, int,
                                                   int, int, int, const int*, const int*, int);
template __global__ void kv_compact<unsigned short>(const unsigned long long*, const long long*, int,
                                                    int, int, int, const int*, const int*, int);
template __global__ void kv_compact<unsigned int>(const unsigned long long*, const long long*, int,
                                                  int, int, int, const int*, const int*, int);
template __global__ void kv_compact<uint2>(const unsigned long long*, const long long*, int, int,
                                           int, int, const int*, const int*, int);
template __global__ void kv_compact<uint4>(const unsigned long long*, const long long*, int, int,
                                           int, int, const int*, const int*, int);
