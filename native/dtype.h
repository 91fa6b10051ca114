// The float dtypes the merge reads and writes, as the addon sees them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ms {

enum class DType : uint8_t { F64, F32, F16, BF16 };

inline size_t dtypeSize(DType d) { return d == DType::F64 ? 8 : d == DType::F32 ? 4 : 2; }

// Parses a safetensors dtype name; false when it is not one the merge handles.
bool parseDType(const char* name, size_t length, DType* out);
const char* dtypeName(DType d);

}  // namespace ms
