#include "dtype.h"

#include <cstring>

namespace ms {

bool parseDType(const char* name, size_t length, DType* out) {
  static const struct {
    const char* name;
    DType dtype;
  } kNames[] = {{"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}};
  for (const auto& e : kNames) {
    if (std::strlen(e.name) == length && std::memcmp(e.name, name, length) == 0) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

const char* dtypeName(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

}  // namespace ms
