// CPython's `random.Random(seed).shuffle`, bit for bit, so that the native matcher visits groups
// in exactly the order the Python reference matchers draw (algorithm-spec §7 item 4): with the
// same seed both follow the same coordinate-descent path, which makes "objective >= reference"
// a property instead of luck. MT19937 with CPython's init_by_array seeding.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace trajtransfer::match {

class PyRandom {
 public:
  /// Same state as `random.Random(seed)` for a non-negative integer seed < 2**64.
  explicit PyRandom(std::uint64_t seed) {
    std::vector<std::uint32_t> key;
    std::uint64_t s = seed;
    do {
      key.push_back(static_cast<std::uint32_t>(s & 0xffffffffu));
      s >>= 32;
    } while (s != 0);
    init_by_array(key);
  }

  /// 32 random bits (genrand_uint32).
  std::uint32_t next_u32() {
    if (index_ >= kN) twist();
    std::uint32_t y = mt_[index_++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
  }

  /// `Random._randbelow(n)` for 1 <= n < 2**32: rejection sampling on bit_length(n) bits.
  std::uint32_t below(std::uint32_t n) {
    int k = 0;
    for (std::uint32_t v = n; v != 0; v >>= 1) ++k;
    std::uint32_t r = next_u32() >> (32 - k);
    while (r >= n) r = next_u32() >> (32 - k);
    return r;
  }

  /// `Random.shuffle(x)`.
  template <class T>
  void shuffle(std::vector<T>& x) {
    for (std::size_t i = x.size(); i-- > 1;) {
      const std::size_t j = below(static_cast<std::uint32_t>(i + 1));
      std::swap(x[i], x[j]);
    }
  }

 private:
  static constexpr int kN = 624;
  static constexpr int kM = 397;
  std::array<std::uint32_t, kN> mt_{};
  int index_ = kN;

  void init_genrand(std::uint32_t s) {
    mt_[0] = s;
    for (int i = 1; i < kN; ++i) {
      mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<std::uint32_t>(i);
    }
    index_ = kN;
  }

  void init_by_array(const std::vector<std::uint32_t>& key) {
    init_genrand(19650218u);
    int i = 1;
    std::size_t j = 0;
    const std::size_t len = key.size();
    for (std::size_t k = (kN > len ? kN : len); k != 0; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] +
               static_cast<std::uint32_t>(j);
      ++i;
      ++j;
      if (i >= kN) {
        mt_[0] = mt_[kN - 1];
        i = 1;
      }
      if (j >= len) j = 0;
    }
    for (int k = kN - 1; k != 0; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) -
               static_cast<std::uint32_t>(i);
      ++i;
      if (i >= kN) {
        mt_[0] = mt_[kN - 1];
        i = 1;
      }
    }
    mt_[0] = 0x80000000u;
  }

  void twist() {
    constexpr std::uint32_t upper = 0x80000000u, lower = 0x7fffffffu, matrix_a = 0x9908b0dfu;
    for (int k = 0; k < kN; ++k) {
      const std::uint32_t y = (mt_[k] & upper) | (mt_[(k + 1) % kN] & lower);
      mt_[k] = mt_[(k + kM) % kN] ^ (y >> 1) ^ ((y & 1u) ? matrix_a : 0u);
    }
    index_ = 0;
  }
};

}  // namespace trajtransfer::match
