// Reads a GramJob / InterpolateJob object (lib/engine/backend.ts) into kernel windows, re-checking
// cheaply what JS has validated: types, dtypes, byte lengths against count, N ≥ 2, and that gram / t
// cover every unit the window touches. Throws ArgumentError naming the field.
#pragma once
#include <napi.h>

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

}  // namespace ms
