// Cheap native re-checks of numbers JS has validated already (JS validates thoroughly first).
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>

namespace ms {

// True when v is an integer in [min, 2^53 − 1]; stores it in *out.
inline bool safeInteger(Napi::Value v, double min, uint64_t* out) {
  constexpr double kMaxSafeInteger = 9007199254740991.0;
  if (!v.IsNumber()) return false;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= min && d <= kMaxSafeInteger) || std::floor(d) != d) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace ms
