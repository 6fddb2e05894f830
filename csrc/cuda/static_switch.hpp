// Turn a runtime flag into a compile-time constant (after flash-attention's static_switch.h).
//
//   TT_BOOL_SWITCH(maximize, kMaximize, [&] { kernel<T, kMaximize><<<...>>>(...); });
#pragma once

#define TT_BOOL_SWITCH(COND, CONST_NAME, ...) \
  [&] {                                       \
    if (COND) {                               \
      constexpr bool CONST_NAME = true;       \
      return __VA_ARGS__();                   \
    } else {                                  \
      constexpr bool CONST_NAME = false;      \
      return __VA_ARGS__();                   \
    }                                         \
  }()
