// Reads a GramJob / InterpolateJob object (lib/engine/backend.ts) into kernel windows, re-checking
// cheaply what JS has validated: types, dtypes, byte lengths against count, N ≥ 2, and that gram / t
// cover every unit the window touches. Throws ArgumentError naming the field.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "kernels.h"

namespace ms {

struct ParsedWindow {
  std::vector<Input> inputs;
  // Every typed array the job points into, kept alive until the work is done.
  std::vector<Napi::Object> arrays;
};

struct GramTask : ParsedWindow {
  GramWindow window{};
};

struct InterpolateTask : ParsedWindow {
  InterpolateWindow window{};
};

void parseGramJob(Napi::Value job, GramTask& task);
void parseInterpolateJob(Napi::Value job, InterpolateTask& task);

// The field readers every job parser shares (job.cc, lowrank_job.cc). Each throws ArgumentError
// "<op>: expected <field> to be <what> but received <what it got>"; `keep` collects the typed arrays
// the work will read, to be held until it is done.
namespace parse {
[[noreturn]] void fail(const char* op, const std::string& field, const std::string& expected, Napi::Value got);
Napi::Object object(const char* op, Napi::Value v, const std::string& field);
// o[key] as an integer in [min, 2^53 − 1].
uint64_t integer(const char* op, Napi::Object o, const char* key, double min);
DType dtype(const char* op, Napi::Value v, const std::string& field);
Napi::TypedArray typedArray(const char* op, Napi::Value v, const std::string& field, napi_typedarray_type type,
                            const char* name);
// {bytes: Uint8Array of count × size(dtype) bytes, dtype}.
Input bytesOf(const char* op, Napi::Value v, const std::string& field, uint64_t count,
              std::vector<Napi::Object>& keep);
// job.isa (default: the best this CPU runs) and job.threads (default 0: all cores).
void runtime(const char* op, Napi::Object job, const KernelTable*& kernels, unsigned& threads);
// job.abort: the merge's abort flag, an Int32Array whose element 0 JS sets to 1; null when absent.
const int32_t* abortFlag(const char* op, Napi::Object job, std::vector<Napi::Object>& keep);
}  // namespace parse

}  // namespace ms
