// Runs the CUDA kernel sources of cuda/*.cu on the CPU, for tests on machines without a GPU.
//
// Each block's threads are real std::threads that meet at a std::barrier in __syncthreads(), so
// the kernels execute with real concurrency: a kernel that relies on an order its threads do not
// guarantee (the racy parallel KV copy of docs/design.md#compaction) can fail here too. Blocks run one
// after another, so a block's __shared__ variables can be plain statics; dynamic shared memory
// (`extern __shared__ T x[];`, rewritten by tests/cuda_emu.py) is one static buffer.
#pragma once
#include <barrier>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __restrict__ __restrict
#define __shared__ static

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local Dim3 threadIdx, blockIdx;
inline Dim3 blockDim, gridDim;
inline std::barrier<>* emu_barrier = nullptr;
alignas(16) inline unsigned char emu_smem[256 * 1024];

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
inline unsigned int atomicOr(unsigned int* a, unsigned int v) {
  return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);
}
inline int atomicMax(int* a, int v) {
  int old = __atomic_load_n(a, __ATOMIC_SEQ_CST);
  while (old < v &&
         !__atomic_compare_exchange_n(a, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
struct uint2 {
  unsigned int x, y;
};
struct uint4 {
  unsigned int x, y, z, w;
};

// Argument slots: every kernel argument arrives as 8 bytes; pointers are reinterpreted, integer
// parameters take their low bytes (little-endian), as a CUDA launch reads a packed buffer.
template <class T>
T emu_from_slot(std::uint64_t s) {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<T>(s);
  } else {
    T v;
    std::memcpy(&v, &s, sizeof(T));
    return v;
  }
}

// One character per parameter, for the Python side to check its argument list: p pointer,
// i int32, I uint32, q int64.
template <class T>
constexpr char emu_code() {
  if constexpr (std::is_pointer_v<T>) return 'p';
  else if constexpr (std::is_same_v<T, int>) return 'i';
  else if constexpr (std::is_same_v<T, unsigned int>) return 'I';
  else if constexpr (std::is_same_v<T, long long>) return 'q';
  else return '?';
}

template <class... A>
const char* emu_signature(void (*)(A...)) {
  static const char sig[] = {emu_code<A>()..., '\0'};
  return sig;
}

template <class... A, std::size_t... I>
void emu_call(void (*k)(A...), const std::uint64_t* s, std::index_sequence<I...>) {
  k(emu_from_slot<A>(s[I])...);
}

template <class... A>
void emu_launch(void (*k)(A...), Dim3 grid, Dim3 block, const std::uint64_t* slots) {
  gridDim = grid;
  blockDim = block;
  const unsigned n = block.x * block.y * block.z;
  std::barrier<> bar(n);
  emu_barrier = &bar;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (unsigned t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            blockIdx = {x, y, z};
            emu_call(k, slots, std::index_sequence_for<A...>{});
            bar.arrive_and_wait();  // the block is done before the next one reuses its statics
          }
    });
  }
  for (auto& th : threads) th.join();
}
