// Link-time shims that let an extension built on a newer x86_64 glibc run on glibc 2.28
// (manylinux_2_28), compiled only with TRAJTRANSFER_GLIBC_2_28=ON (see CMakeLists.txt and
// .ci/build_wheel.sh).
//
// With libstdc++ linked statically, the only glibc symbols newer than 2.28 the module needs are
// the ones below: the pthread functions that glibc 2.34 moved into libc under a new version node,
// __libc_single_threaded (2.32, read by libstdc++'s reference counting) and arc4random (2.36,
// std::random_device). The linker is told to --wrap each of them, so every reference, including
// those inside libstdc++.a, lands on a __wrap_ function here; each wrapper binds to the symbol's
// pre-2.34 version (GLIBC_2.2.5, which glibc >= 2.34 still exports as a compatibility alias of the
// same function) or replaces a 2.32+ symbol with a 2.28-era equivalent.
#include <pthread.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

#if !defined(__x86_64__) || !defined(__GLIBC__)
#error "glibc_2_28.cpp targets x86_64 glibc (GLIBC_2.2.5 is x86_64's base version node)"
#endif

#define TT_HIDDEN __attribute__((visibility("hidden")))

// In this file, NAME means NAME@GLIBC_2.2.5 (.symver on an undefined symbol), and the linker does
// not --wrap a versioned reference, so __wrap_NAME reaches the old version node.
#define TT_OLD_PTHREAD(ret, name, params, args)                      \
  __asm__(".symver " #name ", " #name "@GLIBC_2.2.5");               \
  extern "C" TT_HIDDEN ret __wrap_##name params { return name args; }

// libstdc++ takes this internal alias's address to see whether threads are linked in; no header
// declares it.
extern "C" int __pthread_key_create(pthread_key_t* key, void (*dtor)(void*));

TT_OLD_PTHREAD(int, pthread_create,
               (pthread_t * t, const pthread_attr_t* attr, void* (*fn)(void*), void* arg),
               (t, attr, fn, arg))
TT_OLD_PTHREAD(int, pthread_detach, (pthread_t t), (t))
TT_OLD_PTHREAD(int, pthread_join, (pthread_t t, void** ret), (t, ret))
TT_OLD_PTHREAD(int, pthread_once, (pthread_once_t * once, void (*fn)(void)), (once, fn))
TT_OLD_PTHREAD(int, pthread_key_create, (pthread_key_t * key, void (*dtor)(void*)), (key, dtor))
TT_OLD_PTHREAD(int, __pthread_key_create, (pthread_key_t * key, void (*dtor)(void*)), (key, dtor))
TT_OLD_PTHREAD(int, pthread_key_delete, (pthread_key_t key), (key))
TT_OLD_PTHREAD(void*, pthread_getspecific, (pthread_key_t key), (key))
TT_OLD_PTHREAD(int, pthread_setspecific, (pthread_key_t key, const void* value), (key, value))
TT_OLD_PTHREAD(int, pthread_mutex_trylock, (pthread_mutex_t * mutex), (mutex))

// 0 = "the process may have several threads": libstdc++ then always takes its atomic paths, which
// are correct in every case (the flag only lets a single-threaded process skip the atomics).
extern "C" {
TT_HIDDEN char __wrap___libc_single_threaded = 0;
}

// getrandom() is in glibc since 2.25; the kernel's CSPRNG, as glibc's own arc4random uses.
extern "C" TT_HIDDEN std::uint32_t __wrap_arc4random(void) {
  std::uint32_t value = 0;
  unsigned char* p = reinterpret_cast<unsigned char*>(&value);
  std::size_t got = 0;
  while (got < sizeof value) {
    const ssize_t n = getrandom(p + got, sizeof value - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      std::abort();  // glibc's arc4random also terminates when no randomness is available
    }
  }
  return value;
}
